#include "diffuse/core/filesystem.h"

#include <ftw.h>
#include <sys/stat.h>
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

}  // namespace

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  // FTW_DEPTH visits children before their directory; FTW_PHYS does not follow links.
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    fail(path, ": cannot remove (", std::strerror(errno), ")");
}

}  // namespace diffuse
