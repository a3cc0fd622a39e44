// Whole-file reads that transparently inflate gzip-compressed files.
#pragma once
#include <string>

namespace diffuse {

// The bytes of path, inflated when they start with the gzip magic (1f 8b), whatever the file's
// name. Throws diffuse::Error naming the file when it cannot be read or the gzip data is corrupt or
// truncated.
std::string read_file_maybe_gzip(const std::string& path);

}  // namespace diffuse
