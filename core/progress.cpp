// core/progress.cpp: see core/progress.h.
#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace octet {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = int64_t(std::llround(seconds));
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                  (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

Progress::Progress(int64_t total, std::string label, std::FILE* out, int tty)
    : total_(std::max<int64_t>(total, 0)),
      label_(std::move(label)),
      out_(out),
      tty_(tty < 0 ? (out && ::isatty(::fileno(out))) : tty != 0),
      start_(Clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && drawn_) finish(extra_);
}

double Progress::elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

std::string Progress::line(int64_t done, double elapsed_s, const std::string& extra) const {
  constexpr int kWidth = 30;
  const double frac = total_ > 0 ? std::clamp(double(done) / double(total_), 0.0, 1.0) : 1.0;
  const int filled = int(frac * kWidth);
  std::string bar(size_t(filled), '#');
  bar.append(size_t(kWidth - filled), '.');
  const double rate = elapsed_s > 0 ? double(done) / elapsed_s : 0.0;
  const double eta = rate > 0 ? double(total_ - done) / rate : -1.0;
  char head[160];
  std::snprintf(head, sizeof head, "%3d%% [%s] %lld/%lld  %.1f it/s  ETA %s  elapsed %s", int(frac * 100.0 + 1e-9),
                bar.c_str(), (long long)done, (long long)total_, rate, format_duration(eta).c_str(),
                format_duration(elapsed_s).c_str());
  std::string s = label_.empty() ? std::string() : label_ + "  ";
  s += head;
  if (!extra.empty()) s += "  " + extra;
  return s;
}

void Progress::update(int64_t done, const std::string& extra) {
  if (finished_ || !out_) return;
  done_ = std::clamp<int64_t>(done, 0, total_);
  extra_ = extra;
  const Clock::time_point now = Clock::now();
  if (tty_) {
    if (drawn_ && done_ < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    std::fprintf(out_, "\r%s\033[K", line(done_, elapsed(), extra_).c_str());
    std::fflush(out_);
    drawn_ = true;
    last_draw_ = now;
  } else {
    const int decile = total_ > 0 ? int(done_ * 10 / total_) : 10;
    if (decile <= last_decile_ || decile >= 10) return;  // 100% is finish()'s line
    last_decile_ = decile;
    std::fprintf(out_, "%s\n", line(done_, elapsed(), extra_).c_str());
    std::fflush(out_);
    drawn_ = true;
  }
}

void Progress::finish(const std::string& extra) {
  if (finished_ || !out_) return;
  finished_ = true;
  if (!extra.empty()) extra_ = extra;
  const std::string s = line(done_ == 0 ? total_ : done_, elapsed(), extra_);
  if (tty_)
    std::fprintf(out_, "\r%s\033[K\n", s.c_str());
  else
    std::fprintf(out_, "%s\n", s.c_str());
  std::fflush(out_);
}

}  // namespace octet
