#include "diffuse/core/filesystem.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path);
}

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// mkdir -p, reporting the first folder that cannot be made.
void make_folders(const std::string& dir, const std::string& what, const std::string& target) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    check(S_ISDIR(st.st_mode), what, " ", target, ": ", dir, " is not a folder");
    return;
  }
  if (dir != "/" && dir != ".") make_folders(parent_of(dir), what, target);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    fail(what, " ", target, ": cannot create folder ", dir, " (", std::strerror(errno), ")");
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(uint64_t{1} << 30));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / double(1 << 20));
  return buf;
}

}  // namespace

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  // FTW_DEPTH visits children before their directory; FTW_PHYS does not follow links.
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fail(path, ": cannot remove (", std::strerror(errno), ")");
}

namespace {

// `target` is what the option named: the folder itself, or the file to be written in it.
void check_folder_for(const std::string& dir, uint64_t bytes_expected, const std::string& what,
                      const std::string& target) {
  make_folders(dir, what, target);
  // access(W_OK) ignores read-only mounts and ACLs on some file systems: a real file tells.
  const std::string probe = dir + "/.diffuse-write-test." + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    fail(what, " ", target, ": cannot create a file in ", dir, " (", std::strerror(errno), ")");
  ::close(fd);
  ::unlink(probe.c_str());
  struct statvfs vfs;
  if (bytes_expected > 0 && ::statvfs(dir.c_str(), &vfs) == 0) {
    const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    check(free_bytes >= bytes_expected, what, " ", target, ": ", human_bytes(free_bytes),
          " free on the file system of ", dir, ", but about ", human_bytes(bytes_expected),
          " will be written");
  }
}

}  // namespace

void check_writable_folder(const std::string& dir, uint64_t bytes_expected,
                           const std::string& what) {
  check(!dir.empty(), what, ": empty path");
  check_folder_for(dir, bytes_expected, what, dir);
}

void check_writable_output(const std::string& path, uint64_t bytes_expected,
                           const std::string& what) {
  check(!path.empty(), what, ": empty path");
  struct stat st;
  check(::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode), what, " ", path,
        ": is a folder, not a file name");
  check_folder_for(parent_of(path), bytes_expected, what, path);
}

}  // namespace diffuse
