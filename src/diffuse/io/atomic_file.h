// Writing files so that nothing a user made is ever lost: write to a temporary file in the same
// directory, fsync it, rename over the target, fsync the directory.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace diffuse {

void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);  // throws diffuse::Error naming the path

// The same, for content held in pieces (a header and tensor buffers) that need not be joined first.
// The temporary file is `.NAME.tmp.PID.N` next to the target; it never outlives a failed write.
void write_file_atomic_parts(const std::string& path, const std::vector<std::string_view>& parts);

}  // namespace diffuse
