// core/progress.h: a progress bar for long loops.
//
//     Progress bar(batches, "epoch 3/40");
//     for (int64_t i = 0; i < batches; ++i) {
//       ...
//       bar.update(i + 1, "loss 0.731 acc 0.742");
//     }
//     bar.finish("loss 0.702 acc 0.751");
//
// On a terminal it redraws one line with '\r' (at most ~10 times a second):
//   epoch 3/40  42% [############.................]  164/390  512.3 it/s  ETA 0:00:00  elapsed 0:00:00  loss ...
// When the stream is not a terminal (a log file, CI), it prints a full line
// each time another 10% is done instead. finish() prints the final line
// (and is called by the destructor if the caller did not).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace octet {

class Progress {
 public:
  // tty: 1 = redraw in place, 0 = line per 10%, -1 = ask isatty(out).
  Progress(int64_t total, std::string label, std::FILE* out = stderr, int tty = -1);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` items of `total` are finished; extra is shown at the end of the line.
  void update(int64_t done, const std::string& extra = "");
  // Prints the final line (with newline). Later calls do nothing.
  void finish(const std::string& extra = "");

  // The status line for `done` items after `elapsed_s` seconds (no '\r' or '\n').
  std::string line(int64_t done, double elapsed_s, const std::string& extra) const;

 private:
  using Clock = std::chrono::steady_clock;
  double elapsed() const;

  int64_t total_;
  std::string label_;
  std::FILE* out_;
  bool tty_;
  Clock::time_point start_;
  Clock::time_point last_draw_;
  int64_t done_ = 0;
  std::string extra_;
  int last_decile_ = 0;  // non-tty: deciles already printed
  bool drawn_ = false;
  bool finished_ = false;
};

// "1:02:03" / "2:03" style durations (negative or non-finite: "?").
std::string format_duration(double seconds);

}  // namespace octet
