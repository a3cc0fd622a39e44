// File-system helpers that avoid std::filesystem::remove_all: PyPI's libtorch.so exports its own
// copy of parts of std::filesystem, and remove_all through it crashes (seen with LibTorch 2.11).
#pragma once
#include <cstdint>
#include <string>

namespace diffuse {

// Removes a file or a whole directory tree; a missing path is not an error.
void remove_tree(const std::string& path);

// Before the work that produces it: checks that the file `path` can be written. Its folder is made
// if missing, must take a new file (one is created and removed there) and must have at least
// `bytes_expected` bytes free (0: nothing known). `what` names the option ("--out"); the message
// names it, the path and why. A path that is an existing folder is refused.
void check_writable_output(const std::string& path, uint64_t bytes_expected,
                           const std::string& what);

// The same for an output folder (made if missing) that will receive `bytes_expected` bytes.
void check_writable_folder(const std::string& dir, uint64_t bytes_expected,
                           const std::string& what);

}  // namespace diffuse
