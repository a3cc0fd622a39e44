// File-system helpers that avoid std::filesystem::remove_all: PyPI's libtorch.so exports its own
// copy of parts of std::filesystem, and remove_all through it crashes (seen with LibTorch 2.11).
#pragma once
#include <string>

namespace diffuse {

// Removes a file or a whole directory tree; a missing path is not an error.
void remove_tree(const std::string& path);

}  // namespace diffuse
