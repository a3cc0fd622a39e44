// A terminal progress bar with rate and ETA, for training, sampling and evaluation loops.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace diffuse {

class ProgressBar {
 public:
  // total: number of units; unit: what is counted ("step", "img"). Draws to stderr, at most ~10x/s;
  // silent when disabled (tests) or when stderr is not a terminal and quiet is requested.
  ProgressBar(int64_t total, std::string label, std::string unit = "it", bool enabled = true);
  ~ProgressBar();
  // Advance by n units; extra is shown after the rate (e.g. "loss 0.031").
  void update(int64_t n = 1, const std::string& extra = "");
  void set_extra(const std::string& extra) { extra_ = extra; }
  // Units already done before this bar started (a resumed run): counted, but not in the rate.
  void resume_from(int64_t done) { done_ = base_ = done; }
  // Work stops after this many seconds even if units remain (--time-limit): the ETA says so.
  void set_time_limit(double seconds) { time_limit_ = seconds; }
  void finish();

 private:
  void draw(bool force);
  int64_t total_, done_ = 0, base_ = 0, drawn_ = -1;  // drawn_: done_ at the last drawn line
  double time_limit_ = 0;
  std::string label_, unit_, extra_;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

std::string format_duration(double seconds);

}  // namespace diffuse
