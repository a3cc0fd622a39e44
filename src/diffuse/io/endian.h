// Byte-order helpers for the file formats here, which are all little-endian on disk.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

namespace diffuse {

inline constexpr bool kLittleEndianHost = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

inline uint64_t load_le(const char* p, size_t nbytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < nbytes; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

inline void store_le(char* p, uint64_t v, size_t nbytes) {
  for (size_t i = 0; i < nbytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// Reverses each itemsize-byte element of data in place: converts between little-endian file
// order and host order on big-endian hosts, a no-op on little-endian ones.
inline void swap_to_host_order(void* data, size_t nbytes, size_t itemsize) {
  if (kLittleEndianHost || itemsize <= 1) return;
  auto* b = static_cast<unsigned char*>(data);
  for (size_t off = 0; off + itemsize <= nbytes; off += itemsize)
    for (size_t i = 0; i < itemsize / 2; ++i) std::swap(b[off + i], b[off + itemsize - 1 - i]);
}

}  // namespace diffuse
