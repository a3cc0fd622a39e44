#include "diffuse/data/gzip.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

std::string read_raw(const std::string& path) {
  std::error_code ec;
  check(!std::filesystem::is_directory(path, ec), path, ": is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path, ": cannot open file");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check(!in.bad(), path, ": read error");
  return bytes;
}

bool gzip_magic_at(const std::string& bytes, size_t at) {
  return bytes.size() >= at + 2 && static_cast<unsigned char>(bytes[at]) == 0x1f &&
         static_cast<unsigned char>(bytes[at + 1]) == 0x8b;
}

// Owns a z_stream so every exit path releases it.
struct Inflater {
  z_stream zs{};
  explicit Inflater(const std::string& path) {
    check(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, path, ": zlib initialisation failed");
  }
  ~Inflater() { inflateEnd(&zs); }
};

// Inflates every member in turn: concatenated members form one valid gzip file (RFC 1952, 2.2).
std::string gunzip(const std::string& path, const std::string& gz) {
  Inflater inf(path);
  z_stream& zs = inf.zs;
  std::string out;
  char buf[1 << 16];
  size_t fed = 0;  // bytes of gz handed to zlib so far
  for (;;) {
    if (zs.avail_in == 0 && fed < gz.size()) {
      const size_t chunk = std::min<size_t>(gz.size() - fed, size_t{1} << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data() + fed));
      zs.avail_in = static_cast<uInt>(chunk);
      fed += chunk;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
      fail(path, ": invalid gzip data (", zs.msg ? zs.msg : "corrupt stream", ")");
    out.append(buf, sizeof buf - zs.avail_out);
    const bool input_done = zs.avail_in == 0 && fed == gz.size();
    if (rc == Z_STREAM_END) {
      if (input_done) return out;
      const size_t next = fed - zs.avail_in;
      check(gzip_magic_at(gz, next), path, ": ", gz.size() - next,
            " unexpected bytes after the end of the gzip data");
      inflateReset(&zs);
      continue;
    }
    // No progress possible without more input, and there is none: the stream stops early.
    if (input_done && zs.avail_out != 0) fail(path, ": truncated gzip data");
  }
}

}  // namespace

std::string read_file_maybe_gzip(const std::string& path) {
  std::string bytes = read_raw(path);
  return gzip_magic_at(bytes, 0) ? gunzip(path, bytes) : bytes;
}

}  // namespace diffuse
