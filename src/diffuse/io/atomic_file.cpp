#include "diffuse/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// Closes the descriptor and removes the temporary file unless released, so a failed write leaves
// neither a half-written target nor a stray temporary behind.
class TempFile {
 public:
  TempFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!released_) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  int fd() const { return fd_; }
  // Returns close()'s errno, 0 on success: NFS reports deferred write errors only here.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }
  void release() { released_ = true; }

 private:
  std::string path_;
  int fd_;
  bool released_ = false;
};

void write_all(int fd, const char* data, size_t size, const std::string& path,
               const std::string& tmp) {
  while (size > 0) {
    const size_t chunk = std::min<size_t>(size, size_t{1} << 30);
    const ssize_t n = ::write(fd, data, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, ": cannot write temporary file ", tmp, ": ", errno_text(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

void write_file_atomic_parts(const std::string& path, const std::vector<std::string_view>& parts) {
  check(!path.empty(), "cannot write a file with an empty path");
  const auto slash = path.find_last_of('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  check(!name.empty() && name != "." && name != "..", path, ": not a file name");

  // The counter keeps two threads of one process that write the same target apart.
  static std::atomic<unsigned> counter{0};
  const std::string tmp = (dir == "/" ? "/" : dir + "/") + "." + name + ".tmp." +
                          std::to_string(::getpid()) + "." + std::to_string(counter++);

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot create temporary file ", tmp, ": ", errno_text(errno));
  TempFile file(tmp, fd);
  for (const auto& part : parts) write_all(fd, part.data(), part.size(), path, tmp);
  if (::fsync(fd) != 0) fail(path, ": cannot fsync temporary file ", tmp, ": ", errno_text(errno));
  if (const int err = file.close(); err != 0)
    fail(path, ": cannot close temporary file ", tmp, ": ", errno_text(err));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    fail(path, ": cannot rename ", tmp, " over it: ", errno_text(errno));
  file.release();

  // The rename is durable only once the directory entry is; some file systems cannot fsync a
  // directory (EINVAL), which is no reason to fail a write that has already happened.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0 && err != EINVAL && err != EROFS)
    fail(path, ": written, but cannot fsync its directory ", dir, ": ", errno_text(err));
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic_parts(path, {std::string_view(bytes)});
}

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", errno_text(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, ": cannot stat: ", errno_text(errno));
  check(!S_ISDIR(st.st_mode), path, ": is a directory, not a file");

  std::string bytes;
  // Regular files are read in one allocation; pipes and the like grow as they are read.
  size_t expected = S_ISREG(st.st_mode) ? static_cast<size_t>(st.st_size) : 0;
  check(expected < bytes.max_size(), path, ": too large to read (", st.st_size, " bytes)");
  bytes.resize(expected > 0 ? expected : 1 << 16);
  size_t done = 0;
  for (;;) {
    if (done == bytes.size()) bytes.resize(bytes.size() * 2);
    const ssize_t n = ::read(fd, &bytes[done], bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, ": cannot read: ", errno_text(errno));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
    // A regular file that is exactly as long as fstat said needs no extra read to see EOF.
    if (expected > 0 && done == expected) break;
  }
  bytes.resize(done);
  return bytes;
}

}  // namespace diffuse
