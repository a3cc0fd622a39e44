#include "diffuse/io/npy.h"

#include <cstring>
#include <limits>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/endian.h"

namespace diffuse {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr size_t kMaxRank = 64;

struct NpyDtype {
  const char* descr;  // as written
  torch::ScalarType type;
  size_t itemsize;
};

constexpr NpyDtype kDtypes[] = {
    {"<f4", torch::kFloat32, 4},
    {"<f8", torch::kFloat64, 8},
    {"|u1", torch::kUInt8, 1},
    {"<i8", torch::kInt64, 8},
};

const NpyDtype* find_dtype(const std::string& descr) {
  // A single byte has no byte order, so '<u1' and '=u1' mean the same as '|u1'.
  if (descr == "<u1" || descr == "=u1") return &kDtypes[2];
  for (const auto& d : kDtypes)
    if (descr == d.descr) return &d;
  return nullptr;
}

// The header is a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// This parser accepts exactly the literals numpy writes there: quoted strings, True/False and
// tuples of non-negative integers.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& path) : s_(text), path_(path) {}

  struct Header {
    std::string descr;
    bool fortran_order = false;
    std::vector<int64_t> shape;
  };

  Header parse() {
    Header h;
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (eat('}')) break;
      const std::string key = parse_string();
      expect(':');
      if (key == "descr") {
        check(!have_descr, path_, ": .npy header repeats 'descr'");
        h.descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        check(!have_order, path_, ": .npy header repeats 'fortran_order'");
        h.fortran_order = parse_bool();
        have_order = true;
      } else if (key == "shape") {
        check(!have_shape, path_, ": .npy header repeats 'shape'");
        h.shape = parse_shape();
        have_shape = true;
      } else {
        fail(path_, ": .npy header has an unexpected key '", key, "'");
      }
      skip_space();
      if (eat(',')) continue;
      expect('}');
      break;
    }
    skip_space();
    check(i_ == s_.size(), path_, ": .npy header has text after the closing brace");
    check(have_descr && have_order && have_shape, path_,
          ": .npy header lacks one of 'descr', 'fortran_order', 'shape'");
    return h;
  }

 private:
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    skip_space();
    if (!eat(c)) fail(path_, ": malformed .npy header: expected '", c, "' at byte ", i_);
  }
  std::string parse_string() {
    skip_space();
    check(i_ < s_.size() && (s_[i_] == '\'' || s_[i_] == '"'), path_,
          ": malformed .npy header: expected a quoted string at byte ", i_);
    const char quote = s_[i_++];
    const size_t start = i_;
    while (i_ < s_.size() && s_[i_] != quote) {
      check(s_[i_] != '\\' && s_[i_] != '\n', path_,
            ": malformed .npy header: unsupported character in a string at byte ", i_);
      ++i_;
    }
    check(i_ < s_.size(), path_, ": malformed .npy header: unterminated string");
    return std::string(s_.substr(start, i_++ - start));
  }
  bool parse_bool() {
    skip_space();
    if (s_.substr(i_, 4) == "True") return i_ += 4, true;
    if (s_.substr(i_, 5) == "False") return i_ += 5, false;
    fail(path_, ": malformed .npy header: 'fortran_order' is not True or False");
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> shape;
    expect('(');
    while (true) {
      skip_space();
      if (eat(')')) break;
      check(i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9', path_,
            ": malformed .npy header: 'shape' must be a tuple of non-negative integers");
      int64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        check(!__builtin_mul_overflow(v, int64_t{10}, &v) &&
                  !__builtin_add_overflow(v, int64_t{s_[i_] - '0'}, &v),
              path_, ": .npy shape dimension is too large");
        ++i_;
      }
      eat('L');  // Python 2 longs
      shape.push_back(v);
      check(shape.size() <= kMaxRank, path_, ": .npy shape has more than ", kMaxRank,
            " dimensions");
      skip_space();
      if (eat(',')) continue;
      expect(')');
      break;
    }
    return shape;
  }

  std::string_view s_;
  size_t i_ = 0;
  const std::string& path_;
};

}  // namespace

torch::Tensor parse_npy(std::string_view bytes, const std::string& path) {
  check(bytes.size() >= kMagicSize + 2 && bytes.substr(0, kMagicSize) == kMagic, path,
        ": not a .npy file (bad magic bytes)");
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  check((major == 1 || major == 2 || major == 3) && minor == 0, path,
        ": unsupported .npy format version ", major, ".", minor, " (expected 1.0, 2.0 or 3.0)");
  const size_t len_size = major == 1 ? 2 : 4;
  const size_t header_start = 8 + len_size;
  check(bytes.size() >= header_start, path, ": .npy file ends inside its header length");
  const uint64_t header_size = load_le(bytes.data() + 8, len_size);
  check(header_size <= bytes.size() - header_start, path, ": .npy header length ", header_size,
        " runs past the end of the file (", bytes.size(), " bytes)");
  const auto header = HeaderParser(bytes.substr(header_start, header_size), path).parse();

  check(!header.fortran_order, path,
        ": Fortran-order .npy arrays are not supported (save with C order)");
  const NpyDtype* dtype = find_dtype(header.descr);
  if (dtype == nullptr) {
    const bool big = !header.descr.empty() && header.descr[0] == '>';
    fail(path, ": unsupported .npy dtype '", header.descr, "'",
         big ? " (big-endian data is not supported)" : "", " (expected <f4, <f8, |u1 or <i8)");
  }
  int64_t numel = 1, stride = 1;
  for (const int64_t d : header.shape)
    check(!__builtin_mul_overflow(numel, d, &numel) &&
              !__builtin_mul_overflow(stride, std::max<int64_t>(d, 1), &stride),
          path, ": .npy shape is too large");
  uint64_t nbytes = 0;
  check(!__builtin_mul_overflow(static_cast<uint64_t>(numel), dtype->itemsize, &nbytes), path,
        ": .npy shape is too large");
  const uint64_t have = bytes.size() - header_start - header_size;
  check(have >= nbytes, path, ": .npy data is truncated: the shape needs ", nbytes,
        " bytes, the file holds ", have);
  check(have == nbytes, path, ": .npy file has ", have - nbytes, " trailing bytes after the data");

  auto t = torch::empty(header.shape, torch::TensorOptions().dtype(dtype->type));
  if (nbytes > 0) {
    std::memcpy(t.data_ptr(), bytes.data() + header_start + header_size, nbytes);
    swap_to_host_order(t.data_ptr(), nbytes, dtype->itemsize);
  }
  return t;
}

torch::Tensor load_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  return parse_npy(bytes, path);
}

void save_npy(const std::string& path, const torch::Tensor& t) {
  check(t.defined(), path, ": cannot save an undefined tensor");
  const NpyDtype* dtype = nullptr;
  for (const auto& d : kDtypes)
    if (d.type == t.scalar_type()) dtype = &d;
  check(dtype != nullptr, path, ": cannot save dtype ", t.scalar_type(),
        " as .npy (supported: float32, float64, uint8, int64)");
  auto c = t.detach().to(torch::kCPU).contiguous();
  const size_t nbytes = static_cast<size_t>(c.numel()) * dtype->itemsize;
  if (!kLittleEndianHost) {
    c = c.clone();
    swap_to_host_order(c.data_ptr(), nbytes, dtype->itemsize);
  }

  std::string dict =
      std::string("{'descr': '") + dtype->descr + "', 'fortran_order': False, 'shape': (";
  for (int64_t i = 0; i < c.dim(); ++i) {
    if (i > 0) dict += ", ";
    dict += std::to_string(c.size(i));
  }
  if (c.dim() == 1) dict += ",";
  dict += "), }";
  // numpy pads with spaces and ends with a newline so the data starts 64-byte aligned.
  const size_t prefix = 10;  // magic, version, 2-byte length
  dict.append((64 - (prefix + dict.size() + 1) % 64) % 64, ' ');
  dict += '\n';
  check(dict.size() <= 0xffff, path, ": .npy header too long for format 1.0");

  std::string head(kMagic, kMagicSize);
  head += '\x01';
  head += '\x00';
  head.resize(prefix);
  store_le(head.data() + 8, dict.size(), 2);
  head += dict;
  std::vector<std::string_view> parts{head};
  if (nbytes > 0) parts.emplace_back(static_cast<const char*>(c.data_ptr()), nbytes);
  write_file_atomic_parts(path, parts);
}

void check_finite(const torch::Tensor& x, const std::string& source) {
  if (!x.is_floating_point()) return;
  const auto bad = torch::isfinite(x).logical_not().flatten().nonzero();
  if (bad.size(0) == 0) return;
  const auto first = bad[0][0].item<int64_t>();
  const double value = x.flatten()[first].item<double>();
  fail(source, ": ", bad.size(0), " of ", x.numel(), " values are not finite; the first is ", value,
       " at flat index ", first, " (shape ", x.sizes(), ")");
}

}  // namespace diffuse
