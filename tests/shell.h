// tests/shell.h: running a program of this build (or a tool such as python3)
// from a test through /bin/sh, for the suites that check a command as a user
// runs it. One helper, so every suite reads exit codes the same way.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include <doctest/doctest.h>

namespace octet::testing {

struct ShellResult {
  int code = -1;    // the exit status, or -1 when the process did not exit normally
  std::string out;  // what it wrote to stdout (add " 2>&1" to the command for stderr too)
};

// Runs `command` with /bin/sh and waits for it.
inline ShellResult run_shell(const std::string& command) {
  ShellResult r;
  FILE* p = ::popen(command.c_str(), "r");
  REQUIRE_MESSAGE(p, "popen failed for: " << command);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace octet::testing
