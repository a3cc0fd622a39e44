// Writing files so that nothing a user made is ever lost: write to a temporary file in the same
// directory, fsync it, rename over the target, fsync the directory.
#pragma once
#include <string>

namespace diffuse {

void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);  // throws diffuse::Error naming the path

}  // namespace diffuse
