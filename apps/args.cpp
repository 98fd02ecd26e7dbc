#include "apps/args.h"

#include <cerrno>
#include <cstdlib>

namespace octet::app {

namespace {
// "-o" is the one short flag: "--out" spelled short.
std::string long_name(const std::string& a) { return a == "-o" ? "--out" : a; }
// Whether a token is a flag (so never the previous flag's value). "-0.5" is a value.
bool is_flag(const std::string& a) { return (a.size() > 2 && a.rfind("--", 0) == 0) || a == "-o" || a == "-h"; }
}  // namespace

Args::Args(int argc, char** argv, std::string command, std::string usage)
    : command_(std::move(command)), usage_(std::move(usage)) {
  for (int i = 0; i < argc; ++i) {
    const std::string a = long_name(argv[i]);
    if (a == "-h" || a == "--help") {
      help_ = true;
    } else if (a.size() > 2 && a.rfind("--", 0) == 0) {
      Flag f;
      auto eq = a.find('=');
      if (eq != std::string::npos) {
        f.name = a.substr(0, eq);
        f.value = a.substr(eq + 1);
        f.has_value = true;
      } else {
        f.name = a;
        if (i + 1 < argc && !is_flag(argv[i + 1])) {
          f.value = argv[++i];
          f.has_value = true;
        }
      }
      flags_.push_back(f);
    } else {
      positional_.push_back(a);
    }
  }
}

const Args::Flag* Args::find(const std::string& name) const {
  const Flag* found = nullptr;
  for (const Flag& f : flags_)
    if (f.name == name) found = &f;  // the last one wins, as in most tools
  return found;
}

bool Args::has(const std::string& name) const { return find(name) != nullptr; }

std::string Args::get(const std::string& name, const std::string& fallback) {
  asked_.insert(name);
  const Flag* f = find(name);
  if (!f) return fallback;
  if (!f->has_value) throw UsageError(command_ + ": " + name + " needs a value");
  return f->value;
}

long long Args::get_int64(const std::string& name, long long fallback) {
  std::string v = get(name, "");
  if (!has(name)) return fallback;
  errno = 0;
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError(command_ + ": " + name + " expects an integer, got '" + v + "'");
  return x;
}

int Args::get_int(const std::string& name, int fallback) {
  long long x = get_int64(name, fallback);
  if (x < -2147483647LL || x > 2147483647LL)
    throw UsageError(command_ + ": " + name + " is out of range: " + std::to_string(x));
  return static_cast<int>(x);
}

double Args::get_double(const std::string& name, double fallback) {
  std::string v = get(name, "");
  if (!has(name)) return fallback;
  errno = 0;
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError(command_ + ": " + name + " expects a number, got '" + v + "'");
  return x;
}

bool Args::flag(const std::string& name) {
  asked_.insert(name);
  const Flag* f = find(name);
  if (!f) return false;
  if (f->has_value) {
    if (f->value == "true" || f->value == "1" || f->value == "yes") return true;
    if (f->value == "false" || f->value == "0" || f->value == "no") return false;
    throw UsageError(command_ + ": " + name + " takes no value (got '" + f->value + "')");
  }
  return true;
}

std::vector<int> Args::get_int_list(const std::string& name, const std::vector<int>& fallback) {
  std::string v = get(name, "");
  if (!has(name)) return fallback;
  std::vector<int> out;
  size_t start = 0;
  while (start <= v.size()) {
    size_t comma = v.find(',', start);
    std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    long x = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE)
      throw UsageError(command_ + ": " + name + " expects integers separated by commas, got '" + v + "'");
    out.push_back(static_cast<int>(x));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string Args::positional_at(size_t i, const std::string& what) const {
  if (i >= positional_.size()) throw UsageError(command_ + ": missing " + what);
  return positional_[i];
}

void Args::finish() const {
  for (const Flag& f : flags_)
    if (!asked_.count(f.name)) throw UsageError(command_ + ": unknown flag " + f.name);
}

}  // namespace octet::app
