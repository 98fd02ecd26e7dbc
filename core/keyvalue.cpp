#include "core/keyvalue.h"

#include <fstream>

namespace octet::kv {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::vector<Line> parse_lines(const std::string& text, const std::string& where) {
  std::vector<Line> out;
  std::map<std::string, int> seen;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string at = where + ":" + std::to_string(n);
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos) throw std::invalid_argument(at + ": expected key = value, got '" + line + "'");
    Line l{n, trim(line.substr(0, eq)), trim(line.substr(eq + 1))};
    if (l.key.empty()) throw std::invalid_argument(at + ": empty key");
    if (auto it = seen.find(l.key); it != seen.end())
      throw std::invalid_argument(at + ": key '" + l.key + "' given twice (first on line " + std::to_string(it->second) +
                                  ")");
    seen[l.key] = n;
    out.push_back(std::move(l));
  }
  return out;
}

std::map<std::string, std::string> parse_map(const std::string& text, const std::string& where) {
  std::map<std::string, std::string> m;
  for (Line& l : parse_lines(text, where)) m[l.key] = std::move(l.value);
  return m;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(what + " " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace octet::kv
