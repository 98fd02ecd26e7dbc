// core/keyvalue.h: configurations as "key" -> "value" text and back, and
// files of "key = value" lines. One mechanism for every configuration of the
// project (nn::TrainConfig, quant::QatConfig, the study file).
//
// A configuration lists its fields ONCE, in a visit function:
//
//   template <class F> void visit(TrainConfig& c, F&& f) {
//     f("epochs", c.epochs);
//     f("lr", c.schedule.lr);
//     f("round", c.round, round_mode_name, parse_round_mode);  // an enum: its two names functions
//   }
//
// and gets both directions from it:
//
//   std::map<std::string, std::string> m;
//   visit(copy, kv::Writer{m});                       // every field as text
//   std::set<std::string> used;
//   visit(c, kv::Reader{m, used, "config"});          // the keys present; bad values throw
//
// Field types: std::string, bool ("true"/"false", or "1"/"0"), int, int64_t,
// uint64_t, float, double (written as the shortest text that reads back as the
// same value), std::vector<int> ("1,2,3"), and enums given with their
// name(E) -> string_view and parse(string_view) -> E functions. The Reader
// names the configuration and the key in every error ("config 'epochs':
// expected an integer, got 'x'"); the caller rejects the keys it did not use.
#pragma once

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace octet::kv {

// The shortest text that reads back as the same value ("0.1", not "0.100000001").
template <class T>
std::string shortest(T v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

struct Writer {
  std::map<std::string, std::string>& m;
  void operator()(const char* k, const std::string& v) { m[k] = v; }
  void operator()(const char* k, bool v) { m[k] = v ? "true" : "false"; }
  void operator()(const char* k, int v) { m[k] = std::to_string(v); }
  void operator()(const char* k, int64_t v) { m[k] = std::to_string(v); }
  void operator()(const char* k, uint64_t v) { m[k] = std::to_string(v); }
  void operator()(const char* k, float v) { m[k] = shortest(v); }
  void operator()(const char* k, double v) { m[k] = shortest(v); }
  void operator()(const char* k, const std::vector<int>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s.push_back(',');
      s.append(std::to_string(v[i]));
    }
    m[k] = s;
  }
  template <class E, class Name, class Parse>
  void operator()(const char* k, E v, Name name, Parse /*parse*/) {
    m[k] = std::string(name(v));
  }
};

struct Reader {
  const std::map<std::string, std::string>& m;
  std::set<std::string>& used;
  std::string what = "config";  // names the configuration in errors: "config", "qat config"
  bool finite_only = false;     // numbers must be finite (not nan, inf)

  void operator()(const char* k, std::string& f) {
    if (auto* v = find(k)) f = *v;
  }
  void operator()(const char* k, bool& f) {
    if (auto* v = find(k)) {
      if (*v == "true" || *v == "1")
        f = true;
      else if (*v == "false" || *v == "0")
        f = false;
      else
        bad(k, *v, "true or false");
    }
  }
  void operator()(const char* k, int& f) {
    if (auto* v = find(k)) f = integer<int>(k, *v);
  }
  void operator()(const char* k, int64_t& f) {
    if (auto* v = find(k)) f = integer<int64_t>(k, *v);
  }
  void operator()(const char* k, uint64_t& f) {
    if (auto* v = find(k)) {
      char* end = nullptr;
      errno = 0;
      const unsigned long long x = std::strtoull(v->c_str(), &end, 10);
      if (v->empty() || *end || errno || (*v)[0] == '-') bad(k, *v, "a non-negative integer");
      f = x;
    }
  }
  void operator()(const char* k, float& f) {
    if (auto* v = find(k)) f = static_cast<float>(number(k, *v));
  }
  void operator()(const char* k, double& f) {
    if (auto* v = find(k)) f = number(k, *v);
  }
  void operator()(const char* k, std::vector<int>& f) {
    if (auto* v = find(k)) {
      f.clear();
      std::stringstream ss(*v);
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) f.push_back(integer<int>(k, item));
    }
  }
  template <class E, class Name, class Parse>
  void operator()(const char* k, E& f, Name /*name*/, Parse parse) {
    if (auto* v = find(k)) {
      try {
        f = parse(*v);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(what + " '" + k + "': " + e.what());
      }
    }
  }

  // Parsers, also for keys outside the visit list (e.g. QatConfig's "bits.<layer>").
  template <class T>
  T integer(const std::string& k, const std::string& v) const {
    errno = 0;
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || errno || x < static_cast<long long>(std::numeric_limits<T>::min()) ||
        x > static_cast<long long>(std::numeric_limits<T>::max()))
      bad(k, v, "an integer");
    return static_cast<T>(x);
  }
  double number(const std::string& k, const std::string& v) const {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || (finite_only && !std::isfinite(x))) bad(k, v, finite_only ? "a finite number" : "a number");
    return x;
  }
  [[noreturn]] void bad(const std::string& k, const std::string& v, const char* expected) const {
    throw std::invalid_argument(what + " '" + k + "': expected " + expected + ", got '" + v + "'");
  }

 private:
  const std::string* find(const char* k) {
    auto it = m.find(k);
    if (it == m.end()) return nullptr;
    used.insert(k);
    return &it->second;
  }
};

// s without the spaces, tabs and carriage returns at its ends.
std::string trim(const std::string& s);

// One "key = value" line of a file.
struct Line {
  int number = 0;  // 1-based
  std::string key, value;
};
// The lines of a key = value text: '#' starts a comment, blank lines are
// skipped, keys and values are trimmed. Throws std::invalid_argument
// "<where>:<line>: expected key = value" for a line without '=', "empty key",
// and for a key given twice (naming both lines). Order is kept.
std::vector<Line> parse_lines(const std::string& text, const std::string& where);
// The same as a map (for configurations, where order does not matter).
std::map<std::string, std::string> parse_map(const std::string& text, const std::string& where);
// A file's text; throws std::invalid_argument "<what> <path>: cannot open".
std::string read_file(const std::string& path, const std::string& what);

}  // namespace octet::kv
