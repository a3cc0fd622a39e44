#include "diffuse/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/endian.h"

namespace diffuse {

namespace {

using json = nlohmann::json;

// The reference implementation's limit; a longer header means a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests at most three levels deep ({name: {shape: [...]}}); bounding the depth
// before parsing keeps a hostile header from exhausting the stack.
constexpr int kMaxJsonDepth = 8;
constexpr size_t kMaxRank = 64;

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  size_t itemsize;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8},   {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"U8", torch::kUInt8, 1},
};
constexpr const char* kDtypeList = "F64, F32, F16, BF16, I64, I32 or U8";

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* find_dtype(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return &d;
  return nullptr;
}

void check_nesting(std::string_view text, const std::string& path) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      check(++depth <= kMaxJsonDepth, path, ": safetensors header nests JSON deeper than ",
            kMaxJsonDepth, " levels");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A JSON value that must be a non-negative integer; `what` names it in the error.
uint64_t get_count(const json& v, const std::string& where, const char* what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) fail(where, ": ", what, " is negative (", v.get<int64_t>(), ")");
  fail(where, ": ", what, " is not a non-negative integer");
}

Entry parse_entry(const std::string& name, const json& value, uint64_t data_size,
                  const std::string& path) {
  const std::string where = path + ": tensor '" + name + "'";
  check(value.is_object(), where, ": header entry is not a JSON object");
  Entry e;
  e.name = name;

  const auto dtype = value.find("dtype");
  check(dtype != value.end(), where, ": header entry has no \"dtype\"");
  check(dtype->is_string(), where, ": \"dtype\" is not a string");
  e.dtype = find_dtype(dtype->get<std::string>());
  check(e.dtype != nullptr, where, ": unsupported dtype '", dtype->get<std::string>(),
        "' (expected ", kDtypeList, ")");

  const auto shape = value.find("shape");
  check(shape != value.end(), where, ": header entry has no \"shape\"");
  check(shape->is_array(), where, ": \"shape\" is not an array");
  check(shape->size() <= kMaxRank, where, ": shape has ", shape->size(), " dimensions (limit ",
        kMaxRank, ")");
  // Both the element count and the product of max(dim, 1) (the outermost stride LibTorch computes)
  // must fit in int64_t.
  int64_t numel = 1, stride = 1;
  for (const auto& d : *shape) {
    const uint64_t dim = get_count(d, where, "a shape dimension");
    const auto n =
        static_cast<int64_t>(std::min<uint64_t>(dim, std::numeric_limits<int64_t>::max()));
    check(dim <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
              !__builtin_mul_overflow(stride, std::max<int64_t>(n, 1), &stride) &&
              !__builtin_mul_overflow(numel, n, &numel),
          where, ": shape is too large");
    e.shape.push_back(n);
  }
  int64_t nbytes = 0;
  check(!__builtin_mul_overflow(numel, static_cast<int64_t>(e.dtype->itemsize), &nbytes), where,
        ": shape is too large");

  const auto offsets = value.find("data_offsets");
  check(offsets != value.end(), where, ": header entry has no \"data_offsets\"");
  check(offsets->is_array() && offsets->size() == 2, where,
        ": \"data_offsets\" is not an array of two integers");
  e.begin = get_count((*offsets)[0], where, "data_offsets[0]");
  e.end = get_count((*offsets)[1], where, "data_offsets[1]");
  check(e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end, "] are reversed");
  check(e.end <= data_size, where, ": data_offsets [", e.begin, ", ", e.end,
        "] run past the data area of ", data_size, " bytes");
  check(e.end - e.begin == static_cast<uint64_t>(nbytes), where, ": data_offsets span ",
        e.end - e.begin, " bytes but dtype ", e.dtype->name, " and the shape need ", nbytes);
  return e;
}

// Every data byte must belong to exactly one tensor: no overlaps, gaps or trailing bytes.
void check_layout(std::vector<const Entry*> entries, uint64_t data_size, const std::string& path) {
  std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) {
    return std::make_pair(a->begin, a->end) < std::make_pair(b->begin, b->end);
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : entries) {
    if (e->begin < pos)
      fail(path, ": tensors '", prev->name, "' and '", e->name, "' overlap (bytes [", prev->begin,
           ", ", prev->end, ") and [", e->begin, ", ", e->end, ") of the data area)");
    check(e->begin == pos, path, ": bytes [", pos, ", ", e->begin,
          ") of the data area belong to no tensor");
    pos = e->end;
    prev = e;
  }
  check(pos == data_size, path, ": ", data_size - pos,
        " trailing bytes after the last tensor's data");
}

}  // namespace

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& path) {
  check(bytes.size() >= 8, path, ": not a safetensors file: ", bytes.size(),
        " bytes, shorter than the 8-byte header length");
  const uint64_t header_size = load_le(bytes.data(), 8);
  const uint64_t rest = bytes.size() - 8;
  check(header_size <= kMaxHeaderBytes, path, ": safetensors header length ", header_size,
        " is absurd (limit ", kMaxHeaderBytes, "); not a safetensors file?");
  check(header_size <= rest, path, ": safetensors header length ", header_size,
        " runs past the end of the file (", rest, " bytes follow the length)");
  const std::string_view header = bytes.substr(8, header_size);
  const char* data = bytes.data() + 8 + header_size;
  const uint64_t data_size = rest - header_size;

  check_nesting(header, path);
  json j;
  try {
    j = json::parse(header.begin(), header.end());
  } catch (const json::parse_error& e) {
    fail(path, ": safetensors header is not valid JSON (error at byte ", e.byte, " of ",
         header_size, ")");
  }
  check(j.is_object(), path, ": safetensors header is not a JSON object");

  SafetensorsFile out;
  std::vector<Entry> entries;
  entries.reserve(j.size());
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      check(value.is_object(), path, ": \"__metadata__\" is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        check(v.is_string(), path, ": \"__metadata__\" entry '", k, "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(key, value, data_size, path));
  }
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  check_layout(std::move(order), data_size, path);

  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    const size_t nbytes = e.end - e.begin;
    if (nbytes > 0) {
      std::memcpy(t.data_ptr(), data + e.begin, nbytes);
      swap_to_host_order(t.data_ptr(), nbytes, e.dtype->itemsize);
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  const std::string bytes = read_file(path);
  return parse_safetensors(bytes, path);
}

void save_safetensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::vector<torch::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  // std::map iterates in sorted-name order, which fixes the byte layout.
  for (const auto& [name, t] : tensors) {
    check(name != "__metadata__", path, ": a tensor cannot be named \"__metadata__\"");
    check(t.defined(), path, ": tensor '", name, "' is undefined");
    const DtypeInfo* info = find_dtype(t.scalar_type());
    check(info != nullptr, path, ": tensor '", name, "' has dtype ", t.scalar_type(),
          ", which cannot be saved (supported: ", kDtypeList, ")");
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * info->itemsize;
    if (!kLittleEndianHost) {
      c = c.clone();
      swap_to_host_order(c.data_ptr(), nbytes, info->itemsize);
    }
    header[name] = {{"dtype", info->name},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    cpu.push_back(std::move(c));
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception&) {
    fail(path, ": tensor names and metadata must be valid UTF-8");
  }
  // Padding keeps the data area 8-byte aligned for readers that map the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string length(8, '\0');
  store_le(length.data(), text.size(), 8);

  std::vector<std::string_view> parts{length, text};
  for (const auto& c : cpu) {
    const size_t nbytes = static_cast<size_t>(c.numel()) * c.element_size();
    if (nbytes > 0) parts.emplace_back(static_cast<const char*>(c.data_ptr()), nbytes);
  }
  write_file_atomic_parts(path, parts);
}

}  // namespace diffuse
