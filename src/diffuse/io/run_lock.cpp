#include "diffuse/io/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

std::string read_fd_text(int fd) {
  std::string text;
  char buf[256];
  ssize_t n;
  while ((n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(text.size()))) > 0 &&
         text.size() < 4096)
    text.append(buf, static_cast<size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string this_holder() {
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown");
  return "pid " + std::to_string(::getpid()) + " on host " + host;
}

}  // namespace

RunLock::RunLock(const std::string& run_dir, const std::string& what) : path_(run_dir + "/.lock") {
  // O_CLOEXEC: ranks started by this process must not inherit (and so keep) the lock.
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(what, " ", run_dir, ": cannot open ", path_, " (", std::strerror(errno), ")");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const auto holder = read_fd_text(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail(what, " ", run_dir, ": another trainer is writing into this run folder (",
           holder.empty() ? std::string("holder unknown") : holder, ", lock ", path_,
           "); wait for it to stop, or stop it, before starting another");
    fail(what, " ", run_dir, ": cannot lock ", path_, " (", std::strerror(err), ")");
  }
  const auto text = this_holder() + "\n";
  // Should this fail the lock still holds, only without the note of who holds it.
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, text.data(), text.size(), 0);
}

RunLock::~RunLock() {
  // Closing the descriptor releases the lock; the file stays, naming the last holder.
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace diffuse
