// Round trips and malformed-input errors for the io module: safetensors, .npy, images, plots and
// atomic writes.
#include <dirent.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <thread>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/image.h"
#include "diffuse/io/npy.h"
#include "diffuse/report/plot.h"
#include "diffuse/io/safetensors.h"

using namespace diffuse;

namespace {

// Only POSIX calls on the file system: PyPI LibTorch exports its own std::filesystem symbols, and
// some of them (remove_all) crash when a test binary resolves to them.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/diffuse_io_XXXXXX";
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    nftw(
        path_.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    if (DIR* d = opendir(path_.c_str())) {
      while (const dirent* e = readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          out.push_back(e->d_name);
      closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::string path_;
};

bool exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

// Runs f, which must throw diffuse::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
    return;
  }
  ADD_FAILURE() << "no diffuse::Error thrown; expected one mentioning " << parts[0];
}

bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data_ptr(), bc.data_ptr(), ac.numel() * ac.element_size()) == 0;
}

// A safetensors file from a header text and raw data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<char>((uint64_t{header.size()} >> (8 * i)) & 255);
  return out + header + data;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Float tensors with the awkward bit patterns: NaN, infinities, -0, denormals.
torch::Tensor special_floats(torch::ScalarType t) {
  const double inf = INFINITY, nan = NAN;
  auto v = torch::tensor({0.0, -0.0, 1.5, -2.25, inf, -inf, nan, 1e-40, 65504.0}, torch::kFloat64);
  return v.to(t);
}

}  // namespace

// ---- safetensors -----------------------------------------------------------------------------

TEST(Safetensors, RoundTripsEveryDtypeBitForBit) {
  TempDir dir;
  std::map<std::string, torch::Tensor> tensors{
      {"f64", torch::randn({2, 3}, torch::kFloat64)},
      {"f32", special_floats(torch::kFloat32)},
      {"f16", special_floats(torch::kFloat16).view({3, 3})},
      {"bf16", special_floats(torch::kBFloat16)},
      {"i64", torch::tensor({INT64_MIN, int64_t{-1}, int64_t{0}, INT64_MAX})},
      {"i32", torch::randint(-1000, 1000, {4, 1, 2}, torch::kInt32)},
      {"u8", torch::arange(256, torch::kInt64).to(torch::kUInt8).view({16, 16})},
      {"scalar", torch::tensor(3.25f).reshape({})},
      {"empty", torch::zeros({0, 3}, torch::kFloat32)},
      {"empty_i64", torch::zeros({2, 0}, torch::kInt64)},
      // Non-contiguous input is written in its logical (C) order.
      {"transposed", torch::arange(6, torch::kFloat32).view({2, 3}).t()},
  };
  const std::map<std::string, std::string> meta{
      {"format", "pt"}, {"step", "1200"}, {"note", "é ∑"}};
  const auto path = dir / "model.safetensors";
  save_safetensors(path, tensors, meta);
  const auto loaded = load_safetensors(path);
  EXPECT_EQ(loaded.metadata, meta);
  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(loaded.tensors.count(name)) << name;
    const auto& got = loaded.tensors.at(name);
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_TRUE(same_bits(got, t)) << name << ": " << got << " vs " << t;
  }
  EXPECT_EQ(loaded.tensors.at("scalar").dim(), 0);
}

TEST(Safetensors, LayoutIsAlignedSortedAndTight) {
  TempDir dir;
  const auto path = dir / "x.safetensors";
  save_safetensors(path, {{"b", torch::ones({3}, torch::kUInt8)}, {"a", torch::ones({2})}});
  const std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);  // the test machines are little-endian
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ(bytes[8], '{');
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 8}));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({8, 11}));
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_FALSE(header.contains("__metadata__"));  // none given
  EXPECT_EQ(bytes.size(), 8 + n + 11);
  // An empty file of tensors is valid too.
  save_safetensors(path, {});
  EXPECT_TRUE(load_safetensors(path).tensors.empty());
}

TEST(Safetensors, MalformedFilesNameTheFileAndTheProblem) {
  TempDir dir;
  const std::string f32x2 = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\x01');
  struct Case {
    std::string bytes, expect;
  };
  const std::vector<Case> cases{
      {"abc", "shorter than the 8-byte"},
      {std::string("\x00\x00\x00\x00\x01\x00\x00\x00", 8) + "{}", "absurd"},
      {std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8) + "{}", "past the end"},
      {safetensors_bytes("{\"a\": ", ""), "not valid JSON"},
      {safetensors_bytes("[1, 2]", ""), "not a JSON object"},
      {safetensors_bytes(std::string(20, '[') + std::string(20, ']'), ""), "deeper"},
      {safetensors_bytes(R"({"a": 5})", ""), "not a JSON object"},
      {safetensors_bytes(R"({"a": {"shape":[2],"data_offsets":[0,8]}})", eight), "no \"dtype\""},
      {safetensors_bytes(R"({"a": {"dtype":"F32","data_offsets":[0,8]}})", eight), "no \"shape\""},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[2]}})", eight), "no \"data_offsets\""},
      {safetensors_bytes(R"({"a": {"dtype":7,"shape":[2],"data_offsets":[0,8]}})", eight),
       "\"dtype\" is not a string"},
      {safetensors_bytes(R"({"a": {"dtype":"F8","shape":[2],"data_offsets":[0,8]}})", eight),
       "unsupported dtype 'F8'"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":2,"data_offsets":[0,8]}})", eight),
       "\"shape\" is not an array"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
       "negative"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight),
       "not a non-negative integer"},
      {safetensors_bytes(
           R"({"a": {"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight),
       "too large"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight),
       "array of two integers"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight),
       "reversed"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", eight),
       "past the data area"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
       "need 12"},
      {safetensors_bytes(
           R"({"a": )" + f32x2 + R"(, "b": {"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
           std::string(12, '\0')),
       "overlap"},
      {safetensors_bytes(R"({"a": {"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                             "b": {"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         std::string(12, '\0')),
       "belong to no tensor"},
      {safetensors_bytes(R"({"a": )" + f32x2 + "}", std::string(11, '\0')), "3 trailing bytes"},
      {safetensors_bytes(R"({"a": )" + f32x2 + R"(, "__metadata__": 3})", eight),
       "\"__metadata__\" is not a JSON object"},
      {safetensors_bytes(R"({"a": )" + f32x2 + R"(, "__metadata__": {"k": 1}})", eight),
       "'k' is not a string"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto path = dir / ("case" + std::to_string(i) + ".safetensors");
    write_bytes(path, cases[i].bytes);
    SCOPED_TRACE(cases[i].expect);
    expect_error([&] { load_safetensors(path); }, {path, cases[i].expect});
  }
  // The well-formed variant of those cases loads.
  const auto ok = dir / "ok.safetensors";
  write_bytes(ok, safetensors_bytes(R"({"a": )" + f32x2 + "}", eight));
  EXPECT_EQ(load_safetensors(ok).tensors.at("a").sizes(), (std::vector<int64_t>{2}));
  expect_error([&] { load_safetensors(dir / "missing.safetensors"); },
               {dir / "missing.safetensors", "No such file"});
}

TEST(Safetensors, WriterRejectsWhatItCannotStore) {
  TempDir dir;
  const auto path = dir / "w.safetensors";
  expect_error(
      [&] {
        save_safetensors(path, {{"flags", torch::ones({2}, torch::kBool)}});
      },
      {path, "flags", "cannot be saved"});
  expect_error(
      [&] {
        save_safetensors(path, {{"__metadata__", torch::ones({2})}});
      },
      {path, "__metadata__"});
  expect_error([&] { save_safetensors(path, {{"u", torch::Tensor()}}); }, {path, "undefined"});
  expect_error(
      [&] {
        save_safetensors(path, {{"a", torch::ones({1})}}, {{"k", "\xff"}});
      },
      {path, "UTF-8"});
  EXPECT_TRUE(dir.names().empty());  // nothing half-written is left behind
}

// ---- npy -------------------------------------------------------------------------------------

TEST(Npy, RoundTripsEachDtypeAndShape) {
  TempDir dir;
  const std::vector<torch::Tensor> arrays{
      special_floats(torch::kFloat32).view({3, 3}),
      torch::randn({2, 3, 4}, torch::kFloat64),
      torch::arange(256, torch::kInt64).to(torch::kUInt8),
      torch::tensor({INT64_MIN, int64_t{7}, INT64_MAX}),
      torch::tensor(2.5).reshape({}),
      torch::zeros({0}, torch::kFloat32),
      torch::zeros({3, 0, 2}, torch::kInt64),
      torch::arange(12, torch::kFloat32).view({3, 4}).t(),
  };
  for (size_t i = 0; i < arrays.size(); ++i) {
    const auto path = dir / ("a" + std::to_string(i) + ".npy");
    save_npy(path, arrays[i]);
    EXPECT_TRUE(same_bits(load_npy(path), arrays[i])) << i;
    // numpy aligns the data to 64 bytes and ends the header with a newline.
    const std::string bytes = read_file(path);
    const size_t header_len = static_cast<unsigned char>(bytes[8]) | bytes[9] << 8;
    EXPECT_EQ((10 + header_len) % 64, 0u) << i;
    EXPECT_EQ(bytes[10 + header_len - 1], '\n') << i;
  }
  const std::string bytes = read_file(dir / "a0.npy");
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_EQ(bytes.substr(10, 59), "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }");
  EXPECT_NE(read_file(dir / "a5.npy").find("'shape': (0,), }"), std::string::npos);
  EXPECT_NE(read_file(dir / "a4.npy").find("'shape': (), }"), std::string::npos);
}

// The bytes numpy.save writes for np.array([[1, 2, 3], [4, 5, 6]], dtype='<f4'), built by hand.
std::string numpy_file(int major, const std::string& dict, const std::string& data) {
  const size_t len_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  while ((8 + len_bytes + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  for (size_t i = 0; i < len_bytes; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 255);
  return out + header + data;
}

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

TEST(Npy, ReadsFilesLaidOutAsNumpyWritesThem) {
  TempDir dir;
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const auto data = f32_bytes({1, 2, 3, 4, 5, 6});
  const auto expected = torch::arange(1, 7, torch::kFloat32).view({2, 3});
  for (int major : {1, 2, 3}) {
    const auto path = dir / ("v" + std::to_string(major) + ".npy");
    write_bytes(path, numpy_file(major, dict, data));
    EXPECT_TRUE(torch::equal(load_npy(path), expected)) << major;
  }
  // Older numpy wrote a 16-byte-aligned header, and '<u1' is the same as '|u1'.
  auto path = dir / "old.npy";
  std::string old = std::string("\x93NUMPY\x01\x00", 8);
  const std::string d = "{'descr': '<u1', 'fortran_order': False, 'shape': (3,), }   \n";
  old += static_cast<char>(d.size());
  old += '\0';
  write_bytes(path, old + d + "\x01\x02\x03");
  EXPECT_TRUE(torch::equal(load_npy(path), torch::tensor({1, 2, 3}, torch::kUInt8)));
}

TEST(Npy, MalformedFilesNameTheFileAndTheProblem) {
  TempDir dir;
  const auto data = f32_bytes({1, 2, 3, 4, 5, 6});
  auto dict = [](const std::string& descr, const std::string& order, const std::string& shape) {
    return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
  };
  struct Case {
    std::string bytes, expect;
  };
  std::string bad_magic = numpy_file(1, dict("<f4", "False", "(2, 3)"), data);
  bad_magic[1] = 'X';
  std::string bad_len = numpy_file(1, dict("<f4", "False", "(2, 3)"), data);
  bad_len[8] = bad_len[9] = '\xff';
  const std::vector<Case> cases{
      {"\x93NUM", "bad magic"},
      {bad_magic, "bad magic"},
      {numpy_file(4, dict("<f4", "False", "(2, 3)"), data), "version 4.0"},
      {bad_len, "past the end"},
      {numpy_file(1, dict("<f4", "True", "(2, 3)"), data), "Fortran"},
      {numpy_file(1, dict(">f4", "False", "(2, 3)"), data), "big-endian"},
      {numpy_file(1, dict("<i4", "False", "(2, 3)"), data), "unsupported .npy dtype '<i4'"},
      {numpy_file(1, dict("<f4", "Maybe", "(2, 3)"), data), "True or False"},
      {numpy_file(1, dict("<f4", "False", "(2, -3)"), data), "non-negative integers"},
      {numpy_file(1, dict("<f4", "False", "(99999999999999999999,)"), data), "too large"},
      {numpy_file(1, dict("<f4", "False", "(4611686018427387904, 4)"), data), "too large"},
      {numpy_file(1, "{'descr': '<f4', 'shape': (2, 3), }", data), "lacks"},
      {numpy_file(1, dict("<f4", "False", "(2, 3)") + " extra", data), "after the closing brace"},
      {numpy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", data),
       "unexpected key 'x'"},
      {numpy_file(1, "{'descr': '<f4' 'fortran_order': False}", data), "expected '}'"},
      {numpy_file(1, "{'descr: '<f4', 'fortran_order': False, 'shape': (2,)}", data), "malformed"},
      {numpy_file(1, dict("<f4", "False", "(2, 3)"), data.substr(0, 23)), "truncated"},
      {numpy_file(1, dict("<f4", "False", "(2, 3)"), data + "xy"), "2 trailing bytes"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto path = dir / ("case" + std::to_string(i) + ".npy");
    write_bytes(path, cases[i].bytes);
    SCOPED_TRACE(cases[i].expect);
    expect_error([&] { load_npy(path); }, {path, cases[i].expect});
  }
  const auto out = dir / "int32.npy";
  expect_error([&] { save_npy(out, torch::ones({2}, torch::kInt32)); }, {out, "Int"});
  EXPECT_FALSE(exists(out));
}

// ---- images ----------------------------------------------------------------------------------

TEST(Image, ToUint8MapsTheRangeRoundingHalvesUp) {
  const auto x = torch::tensor({-1.0f, 1.0f, 0.0f, -3.0f, 3.0f, NAN, INFINITY, -INFINITY});
  const auto u = to_uint8(x);
  EXPECT_EQ(u.scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(u, torch::tensor({0, 255, 128, 0, 255, 0, 255, 0}, torch::kUInt8)));
  // It inverts the u / 127.5 - 1 normalisation for every level, in any leading shape.
  const auto levels = torch::arange(256, torch::kInt64);
  const auto normalised = (levels.to(torch::kFloat64) / 127.5 - 1).to(torch::kFloat32);
  const auto back = to_uint8(normalised.view({2, 2, 1, 8, 8}));
  EXPECT_EQ(back.sizes(), (std::vector<int64_t>{2, 2, 1, 8, 8}));
  EXPECT_TRUE(torch::equal(back.flatten().to(torch::kInt64), levels));
  EXPECT_THROW(to_uint8(levels), Error);
}

// Images whose pixels all map to 10 * (i + 1).
torch::Tensor numbered_images(int64_t n, int64_t c, int64_t h, int64_t w) {
  const auto level = torch::arange(1, n + 1, torch::kFloat32) * 10;
  return (level / 127.5 - 1).view({n, 1, 1, 1}).expand({n, c, h, w}).contiguous();
}

TEST(Image, GridPlacesImagesAndPadsWithAConstant) {
  const int64_t n = 5, c = 3, h = 2, w = 3, pad = 2;
  for (const int pad_value : {0, 255}) {
    const auto grid = make_grid(numbered_images(n, c, h, w), 2, pad, pad_value);
    ASSERT_EQ(grid.sizes(), (std::vector<int64_t>{c, 3 * (h + pad) + pad, 2 * (w + pad) + pad}));
    auto is_image = torch::zeros({grid.size(1), grid.size(2)}, torch::kBool);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = pad + (i / 2) * (h + pad), x = pad + (i % 2) * (w + pad);
      const auto cell = grid.narrow(1, y, h).narrow(2, x, w);
      EXPECT_TRUE((cell == 10 * (i + 1)).all().item<bool>()) << i;
      is_image.narrow(0, y, h).narrow(1, x, w).fill_(true);
    }
    // Padding and the empty sixth cell hold pad_value and nothing else.
    const auto rest = grid.masked_select(is_image.logical_not().expand_as(grid));
    EXPECT_EQ(rest.numel(), grid.numel() - n * c * h * w);
    EXPECT_TRUE((rest == pad_value).all().item<bool>());
  }
  // More columns asked for than images: a single row as wide as the images.
  EXPECT_EQ(make_grid(numbered_images(3, 1, 4, 4), 8, 0).sizes(), (std::vector<int64_t>{1, 4, 12}));
  EXPECT_THROW(make_grid(numbered_images(2, 1, 2, 2), 0), Error);
  EXPECT_THROW(make_grid(torch::zeros({2, 2}), 1), Error);
}

TEST(Image, PngRoundTripsPixelsExactly) {
  TempDir dir;
  const auto rgb = torch::randint(0, 256, {3, 7, 5}, torch::kInt64).to(torch::kUInt8);
  const auto grey = torch::randint(0, 256, {1, 4, 6}, torch::kInt64).to(torch::kUInt8);
  save_png(dir / "rgb.png", rgb);
  save_png(dir / "grey.png", grey);
  EXPECT_TRUE(torch::equal(load_image(dir / "rgb.png", 3), rgb));
  EXPECT_TRUE(torch::equal(load_image(dir / "rgb.png", 0), rgb));
  EXPECT_TRUE(torch::equal(load_image(dir / "grey.png", 1), grey));
  EXPECT_TRUE(torch::equal(load_image(dir / "grey.png", 3), grey.expand({3, 4, 6})));
  // A non-contiguous view is written as it looks.
  save_png(dir / "t.png", rgb.transpose(1, 2));
  EXPECT_TRUE(torch::equal(load_image(dir / "t.png", 3), rgb.transpose(1, 2)));

  const auto images = numbered_images(4, 3, 5, 5);
  save_grid_png(dir / "grid.png", images, 3);
  EXPECT_TRUE(torch::equal(load_image(dir / "grid.png", 3), make_grid(images, 3)));

  write_bytes(dir / "junk.png", "definitely not a PNG");
  expect_error([&] { load_image(dir / "junk.png", 3); }, {dir / "junk.png", "cannot read image"});
  expect_error([&] { load_image(dir / "none.png", 3); }, {dir / "none.png"});
  expect_error([&] { save_png(dir / "bad.png", torch::zeros({2, 2, 2})); }, {dir / "bad.png"});
  expect_error(
      [&] {
        save_png(dir / "bad.png", torch::zeros({5, 2, 2}, torch::kUInt8));
      },
      {dir / "bad.png", "5-channel"});
}

TEST(Image, StripArrangesRowsOfImages) {
  TempDir dir;
  const auto a = numbered_images(3, 3, 2, 2), b = numbered_images(3, 3, 2, 2).flip(0);
  save_strip_png(dir / "strip.png", {a, b});
  const auto img = load_image(dir / "strip.png", 3);
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 2 * 4 + 2, 3 * 4 + 2}));
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(img[0][2][2 + 4 * i].item<int>(), 10 * (i + 1));
    EXPECT_EQ(img[0][6][2 + 4 * i].item<int>(), 10 * (3 - i));
  }
  expect_error(
      [&] {
        save_strip_png(dir / "s.png", {a, numbered_images(2, 3, 2, 2)});
      },
      {dir / "s.png", "row 1"});
  expect_error([&] { save_strip_png(dir / "s.png", {}); }, {dir / "s.png"});
}

// ---- plots -----------------------------------------------------------------------------------

int64_t count_colour(const torch::Tensor& chw, const std::array<uint8_t, 3>& rgb) {
  auto m = torch::ones({chw.size(1), chw.size(2)}, torch::kBool);
  for (int k = 0; k < 3; ++k) m &= chw[k] == rgb[k];
  return m.sum().item<int64_t>();
}

TEST(Plot, DrawsEachSeriesInItsColour) {
  TempDir dir;
  Series loss{"train loss", {}, {}}, ema{"ema loss", {}, {}};
  for (int i = 0; i < 100; ++i) {
    loss.x.push_back(i * 10);
    loss.y.push_back(1.0 / (1 + i) + (i % 7) * 0.01);
    ema.x.push_back(i * 10);
    ema.y.push_back(i == 50 ? NAN : 1.0 / (1 + i));
  }
  const auto path = dir / "loss.png";
  save_line_plot(path, {loss, ema}, "Loss (step/1000)", "step", "loss", true);
  const auto img = load_image(path, 3);
  ASSERT_EQ(img.sizes(), (std::vector<int64_t>{3, 500, 800}));
  EXPECT_GT(count_colour(img, {0, 0, 0}), 500);  // axes and text
  // Lines, not just the legend's sample strokes, carry each colour.
  Series blank{"train loss", loss.x, std::vector<double>(100, NAN)};
  const auto legend_only = render_line_plot({blank, blank}, "t", "x", "y");
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_GT(count_colour(img, series_colour(k)),
              count_colour(legend_only, series_colour(k)) + 200)
        << k;
    EXPECT_GT(count_colour(legend_only, series_colour(k)), 0) << k;
  }
  EXPECT_NE(series_colour(0), series_colour(1));

  save_line_plot(path, {loss}, "linear", "x", "y", false, 640, 360);
  EXPECT_EQ(load_image(path, 3).sizes(), (std::vector<int64_t>{3, 360, 640}));
}

TEST(Plot, SurvivesDegenerateDataAndSharesCaseGlyphs) {
  const std::vector<Series> odd{
      {"single", {1}, {2}},
      {"flat", {0, 1, 2}, {5, 5, 5}},
      {"bad", {NAN, INFINITY, 1}, {-1, 0, NAN}},
      {"huge", {0, 1}, {1e300, -1e300}},
  };
  for (bool log_y : {false, true}) {
    const auto img = render_line_plot(odd, "odd", "x", "y", log_y);
    EXPECT_EQ(img.sizes(), (std::vector<int64_t>{3, 500, 800}));
    EXPECT_GT(count_colour(img, series_colour(0)), 20);
  }
  const auto none = render_line_plot({}, "", "", "");
  EXPECT_GT(count_colour(none, {0, 0, 0}), 100);
  EXPECT_TRUE(torch::equal(render_line_plot({}, "Loss: 1e-3 (50%)", "x", "y"),
                           render_line_plot({}, "LOSS: 1E-3 (50%)", "X", "Y")));
  EXPECT_FALSE(
      torch::equal(render_line_plot({}, "A", "x", "y"), render_line_plot({}, "B", "x", "y")));
  EXPECT_THROW(render_line_plot({{"bad", {1, 2}, {1}}}, "t", "x", "y"), Error);
  EXPECT_THROW(render_line_plot({}, "t", "x", "y", false, 10, 10), Error);
}

// ---- atomic writes ---------------------------------------------------------------------------

TEST(AtomicFile, WritesReplacesAndLeavesNoTemporaries) {
  TempDir dir;
  const auto path = dir / "state.bin";
  write_file_atomic(path, std::string("first\0version", 13));
  EXPECT_EQ(read_file(path), std::string("first\0version", 13));
  write_file_atomic_parts(path, {"sec", "", "ond"});
  EXPECT_EQ(read_file(path), "second");
  EXPECT_EQ(dir.names(), std::vector<std::string>{"state.bin"});

  // A failed write (the target is a directory) names the path and the reason, and cleans up.
  ASSERT_EQ(::mkdir((dir / "sub").c_str(), 0755), 0);
  expect_error([&] { write_file_atomic(dir / "sub", "x"); }, {dir / "sub", "Is a directory"});
  expect_error([&] { write_file_atomic(dir / "no/such/dir.bin", "x"); },
               {dir / "no/such/dir.bin", "No such file or directory"});
  EXPECT_EQ(dir.names(), (std::vector<std::string>{"state.bin", "sub"}));
  expect_error([&] { read_file(dir / "sub"); }, {dir / "sub", "directory"});
  expect_error([&] { read_file(dir / "absent"); }, {dir / "absent", "No such file"});
}

TEST(AtomicFile, ReadersNeverSeeAHalfWrittenFile) {
  TempDir dir;
  const auto path = dir / "big.bin";
  const std::string a(1 << 18, 'a'), b(1 << 18, 'b');
  write_file_atomic(path, a);
  std::atomic<bool> done{false};
  std::atomic<int> torn{0}, reads{0};
  std::thread reader([&] {
    while (!done) {
      const std::string got = read_file(path);
      if (got != a && got != b) ++torn;
      ++reads;
    }
  });
  for (int i = 0; i < 20; ++i) write_file_atomic(path, i % 2 ? a : b);
  done = true;
  reader.join();
  EXPECT_EQ(torn, 0);
  EXPECT_GT(reads, 0);
  EXPECT_EQ(dir.names(), std::vector<std::string>{"big.bin"});
}
