#include "diffuse/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace diffuse {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--:--";
  const auto t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

ProgressBar::ProgressBar(int64_t total, std::string label, std::string unit, bool enabled)
    : total_(total), label_(std::move(label)), unit_(std::move(unit)), enabled_(enabled) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() {
  finish();
}

void ProgressBar::update(int64_t n, const std::string& extra) {
  done_ += n;
  if (!extra.empty()) extra_ = extra;
  draw(done_ >= total_);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  if (drawn_ != done_) draw(true);
  // A terminal line was drawn with \r and still needs its end; log lines already have one.
  if (isatty(fileno(stderr))) std::fputc('\n', stderr);
}

void ProgressBar::draw(bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool tty = isatty(fileno(stderr));
  // On a terminal redraw ~10x/s; in a log file print a line every 10 s.
  const double min_gap = tty ? 0.1 : 10.0;
  if (!force && std::chrono::duration<double>(now - last_draw_).count() < min_gap) return;
  last_draw_ = now;
  drawn_ = done_;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? (done_ - base_) / elapsed : 0.0;
  double eta = rate > 0 ? (total_ - done_) / rate : -1.0;
  if (time_limit_ > 0)
    eta = std::max(0.0, eta < 0 ? time_limit_ - elapsed : std::min(eta, time_limit_ - elapsed));
  const int width = 24;
  const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / total_) : 1.0;
  const int filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  std::fprintf(stderr, "%s%s [%s] %lld/%lld %5.1f%% %.2f %s/s elapsed %s eta %s%s%s",
               tty ? "\r" : "", label_.c_str(), bar.c_str(), static_cast<long long>(done_),
               static_cast<long long>(total_), 100.0 * frac, rate, unit_.c_str(),
               format_duration(elapsed).c_str(), format_duration(eta).c_str(),
               extra_.empty() ? "" : "  ", extra_.c_str());
  if (!tty) std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace diffuse
