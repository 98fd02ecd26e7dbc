// apps/args.h: the flag parser every `octet` subcommand uses.
//
//   Args args(argc, argv, "octet train", usage_text);
//   int epochs = args.get_int("--epochs", 40);
//   std::string data = args.get("--data", "");
//   bool resume = args.flag("--resume");
//   args.finish();   // throws on any flag nobody asked for
//
// Flags take "--name value" or "--name=value"; "-o X" is "--out X". A token
// is a flag's value unless it is a flag itself ("--x", "-o", "-h"; "-0.5" is
// a value), so a flag without a value may stand before another flag.
// Anything else that does not start with "--" is a positional argument. A malformed number or an unknown flag
// throws UsageError with the command's name, which main() prints with a hint.
#pragma once

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace octet::app {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  Args(int argc, char** argv, std::string command, std::string usage);

  bool help() const { return help_; }  // -h or --help was given
  const std::string& usage() const { return usage_; }

  std::string get(const std::string& name, const std::string& fallback);
  bool has(const std::string& name) const;
  int get_int(const std::string& name, int fallback);
  long long get_int64(const std::string& name, long long fallback);
  double get_double(const std::string& name, double fallback);
  bool flag(const std::string& name);  // a flag without a value
  // A comma-separated list of integers ("1,2").
  std::vector<int> get_int_list(const std::string& name, const std::vector<int>& fallback);

  const std::vector<std::string>& positional() const { return positional_; }
  std::string positional_at(size_t i, const std::string& what) const;  // throws naming `what` if missing

  // Throws UsageError if a flag was given that no get/flag call asked for.
  void finish() const;

 private:
  struct Flag {
    std::string name;
    std::string value;
    bool has_value = false;
  };
  const Flag* find(const std::string& name) const;
  std::string command_;
  std::string usage_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  std::set<std::string> asked_;
  bool help_ = false;
};

}  // namespace octet::app
