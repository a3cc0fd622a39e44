// One writer per run folder: RUN/.lock holds the pid and host of the process training into RUN,
// under an flock(2) lock. The kernel drops the lock when the process exits, however it dies, so a
// lock left by a killed trainer never blocks; the file's text only names the holder.
#pragma once
#include <string>

namespace diffuse {

class RunLock {
 public:
  // Takes RUN/.lock without waiting (RUN must exist); if another process holds it, throws
  // diffuse::Error naming `what` (the option), RUN, and the holder's pid and host.
  RunLock(const std::string& run_dir, const std::string& what);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace diffuse
