// The progress bar: the status line's fields, redrawing on a terminal, and a
// line per 10% elsewhere.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "core/progress.h"

using namespace octet;

namespace {
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  int ch;
  while ((ch = std::fgetc(f)) != EOF) s += char(ch);
  return s;
}
int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("format_duration") {
  CHECK(format_duration(0) == "0:00");
  CHECK(format_duration(65.4) == "1:05");
  CHECK(format_duration(3725) == "1:02:05");
  CHECK(format_duration(-1) == "?");
}

TEST_CASE("the status line: label, percent, bar, counts, rate, ETA, elapsed, extra text") {
  Progress p(200, "epoch 3/40", nullptr, 0);
  std::string s = p.line(50, 10.0, "loss 0.731");
  CHECK(s.find("epoch 3/40") == 0);
  CHECK(s.find(" 25% ") != std::string::npos);
  CHECK(s.find("[#######.......................]") != std::string::npos);  // 7 of 30
  CHECK(s.find("50/200") != std::string::npos);
  CHECK(s.find("5.0 it/s") != std::string::npos);
  CHECK(s.find("ETA 0:30") != std::string::npos);
  CHECK(s.find("elapsed 0:10") != std::string::npos);
  CHECK(s.find("loss 0.731") != std::string::npos);
  CHECK(p.line(0, 0.0, "").find("ETA ?") != std::string::npos);
}

TEST_CASE("not a terminal: one line per 10%, then the final line") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    Progress p(100, "eval", f, 0);
    for (int i = 1; i <= 100; ++i) p.update(i, "acc 0.9");
    p.finish("acc 0.91");
    p.finish("ignored");  // only once
  }
  std::string out = contents(f);
  std::fclose(f);
  CHECK(count(out, "\n") == 10);  // 10%..90% and the final line
  CHECK(count(out, "\r") == 0);
  CHECK(out.find(" 10% ") != std::string::npos);
  CHECK(out.find(" 90% ") != std::string::npos);
  CHECK(out.find("100% [##############################] 100/100") != std::string::npos);
  CHECK(out.find("acc 0.91\n") != std::string::npos);
  CHECK(out.find("ignored") == std::string::npos);
}

TEST_CASE("terminal: redraws in place with \\r, throttled, ends with a newline") {
  std::FILE* f = std::tmpfile();
  REQUIRE(f);
  {
    Progress p(1000, "train", f, 1);
    for (int i = 1; i <= 1000; ++i) p.update(i);
  }  // the destructor finishes
  std::string out = contents(f);
  std::fclose(f);
  CHECK(count(out, "\r") >= 2);     // first draw, 100%, final line
  CHECK(count(out, "\r") < 1000);  // throttled
  CHECK(count(out, "\n") == 1);
  CHECK(out.back() == '\n');
  CHECK(out.find("1000/1000") != std::string::npos);
}
