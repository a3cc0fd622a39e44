// The public C++ API as a consumer sees it: <diffuse/diffuse.h> (and remove_tree for cleanup). Its
// results are checked against the `diffuse` CLI (a separate program over the same modules) and
// against properties of the files it writes.
#include <diffuse/diffuse.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "diffuse/core/filesystem.h"  // remove_tree: see its note on std::filesystem::remove_all

namespace fs = std::filesystem;

namespace {

const std::string kTiny = std::string(DIFFUSE_TEST_DATA) + "/diffusers_tiny";

struct Cli {
  int status;
  std::string output;
};

Cli run_cli(const std::string& args) {
  const auto log = fs::temp_directory_path() / ("diffuse_api_" + std::to_string(::getpid()));
  const int rc = std::system(
      (std::string(DIFFUSE_CLI_PATH) + " " + args + " > " + log.string() + " 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  fs::remove(log);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, ss.str()};
}

fs::path temp_dir(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("diffuse_api_" + tag + "_" + std::to_string(::getpid()));
  diffuse::remove_tree(d.string());
  fs::create_directories(d);
  return d;
}

diffuse::Model tiny() {
  diffuse::LoadOptions o;
  o.device = "cpu";
  o.threads = 1;
  return diffuse::Model::load(kTiny, o);
}

float max_abs_diff(const diffuse::Images& a, const diffuse::Images& b) {
  float m = 0;
  for (size_t i = 0; i < a.data.size(); ++i) m = std::max(m, std::abs(a.data[i] - b.data[i]));
  return m;
}

// The message of the diffuse::Error f throws ("" when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const diffuse::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Api, VersionIsTheCliVersion) {
  const std::string v = diffuse::version();
  EXPECT_EQ(v, DIFFUSE_VERSION_STRING);
  ASSERT_EQ(std::count(v.begin(), v.end(), '.'), 2) << v;
  const auto r = run_cli("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.output.rfind("diffuse " + v + " ", 0), 0u) << r.output;
}

TEST(Api, LoadsADiffusersFolder) {
  const auto info = tiny().info();
  // tests/data/diffusers_tiny/config.json: in_channels 2, sample_size 16, num_class_embeds 5
  // (4 classes and the null class).
  EXPECT_EQ(info.channels, 2);
  EXPECT_EQ(info.height, 16);
  EXPECT_EQ(info.width, 16);
  EXPECT_EQ(info.num_classes, 4);
  EXPECT_EQ(info.device, "cpu");
  EXPECT_NE(info.description.find("diffusers_tiny"), std::string::npos) << info.description;
}

TEST(Api, SampleMatchesTheCli) {
  const auto dir = temp_dir("sample");
  const auto npy = (dir / "cli.npy").string();
  const auto r = run_cli("sample --model " + kTiny + " --sampler ddim --steps 4 --n 3 --seed 7 " +
                         "--class 1 --device cpu --threads 1 --out " + (dir / "g.png").string() +
                         " --save-npy " + npy);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto cli = diffuse::load_npy_images(npy);
  diffuse::SampleOptions o;
  o.sampler = "ddim";
  o.steps = 4;
  o.n = 3;
  o.seed = 7;
  o.classes = {1};
  const auto model = tiny();
  const auto api = model.sample(o);
  ASSERT_EQ(api.n, 3);
  ASSERT_EQ(api.channels, 2);
  ASSERT_EQ(api.height, 16);
  ASSERT_EQ(api.width, 16);
  ASSERT_EQ(api.data.size(), cli.data.size());
  EXPECT_LT(max_abs_diff(api, cli), 1e-6f);
  // The seed and the class reach the network.
  o.seed = 8;
  EXPECT_GT(max_abs_diff(model.sample(o), api), 1e-3f);
  o.seed = 7;
  o.classes = {2};
  EXPECT_GT(max_abs_diff(model.sample(o), api), 1e-6f);
  diffuse::remove_tree(dir.string());
}

TEST(Api, ErrorsCarryTheCliMessage) {
  const std::string missing = "/nonexistent/model_dir";
  const auto msg = error_of([&] { diffuse::Model::load(missing); });
  ASSERT_NE(msg.find(missing), std::string::npos) << msg;
  const auto r = run_cli("sample --model " + missing + " --device cpu --out /tmp/x.png");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("error: " + msg), std::string::npos) << r.output << " vs " << msg;

  const auto model = tiny();
  diffuse::SampleOptions o;
  o.sampler = "no-such-sampler";
  const auto bad = error_of([&] { model.sample(o); });
  EXPECT_NE(bad.find("--sampler"), std::string::npos) << bad;
  EXPECT_NE(bad.find("ddim"), std::string::npos) << bad;  // lists the accepted names
  o = {};
  o.classes = {9};
  EXPECT_NE(error_of([&] { model.sample(o); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] {
              diffuse::LoadOptions l;
              l.device = "tpu";
              diffuse::Model::load(kTiny, l);
            }).find("tpu"),
            std::string::npos);
  diffuse::Images wrong(1, 2, 16, 16);
  wrong.data.resize(5);
  EXPECT_NE(error_of([&] { diffuse::save_npy("/tmp/never.npy", wrong); }).find("needs 512"),
            std::string::npos);
  EXPECT_FALSE(fs::exists("/tmp/never.npy"));
}

TEST(Api, SavesPngGridAndNpy) {
  const auto dir = temp_dir("save");
  diffuse::Images im(3, 1, 4, 5);
  for (size_t i = 0; i < im.data.size(); ++i) im.data[i] = static_cast<float>(i % 7) / 3.0f - 1.0f;
  const auto png = (dir / "grid.png").string();
  diffuse::save_png_grid(png, im, 2);
  std::ifstream in(png, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t k = 0; k < 4; ++k) v = (v << 8) | static_cast<uint8_t>(bytes[at + k]);
    return v;
  };
  // 2 columns and 2 rows of 5x4 images with 2 pixels of padding around each.
  EXPECT_EQ(be32(16), 2u * (5 + 2) + 2);  // IHDR width
  EXPECT_EQ(be32(20), 2u * (4 + 2) + 2);  // IHDR height

  const auto npy = (dir / "x.npy").string();
  diffuse::save_npy(npy, im);
  const auto back = diffuse::load_npy_images(npy);
  EXPECT_EQ(back.n, 3);
  EXPECT_EQ(back.channels, 1);
  EXPECT_EQ(back.height, 4);
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.data, im.data);
  diffuse::remove_tree(dir.string());
}

TEST(Api, InterpolationEndsAtTheDecodedLatents) {
  const auto model = tiny();
  diffuse::SampleOptions so;
  so.n = 2;
  so.steps = 3;
  const auto x = model.sample(so);
  diffuse::InversionOptions o;
  o.steps = 3;
  const auto z = model.encode(x, o);
  ASSERT_EQ(z.n, 2);
  ASSERT_EQ(z.size(), x.size());
  EXPECT_GT(max_abs_diff(z, x), 1e-3f);  // the latents are not the images
  diffuse::Images za(1, z.channels, z.height, z.width), zb = za;
  std::copy(z.data.begin(), z.data.begin() + za.size(), za.data.begin());
  std::copy(z.data.begin() + za.size(), z.data.end(), zb.data.begin());
  const auto frames = model.interpolate(za, zb, 4, o);
  ASSERT_EQ(frames.n, 4);
  const auto da = model.decode(za, o), db = model.decode(zb, o);
  diffuse::Images first(1, 2, 16, 16), last = first;
  std::copy(frames.data.begin(), frames.data.begin() + first.size(), first.data.begin());
  std::copy(frames.data.end() - last.size(), frames.data.end(), last.data.begin());
  // The frames are decoded as one batch, the ends alone: equal up to the CPU's float rounding.
  EXPECT_LT(max_abs_diff(first, da), 1e-4f);
  EXPECT_LT(max_abs_diff(last, db), 1e-4f);
  EXPECT_GT(max_abs_diff(first, last), 1e-3f);
}

TEST(Api, TrainsFromAConfigAndLoadsTheRun) {
  const auto dir = temp_dir("train");
  const auto run = (dir / "run").string();
  const std::string cfg = R"({"data": "synthetic", "model": "tiny-test", "out": ")" + run +
                          R"(", "steps": 2, "batch": 2, "warmup": 0, "log_every": 1,
      "sample_every": 0, "ckpt_every": 0, "device": "cpu", "threads": 1})";
  const auto result = diffuse::train(cfg);
  EXPECT_EQ(result.run_dir, run);
  EXPECT_EQ(result.step, 2);
  diffuse::LoadOptions l;
  l.device = "cpu";
  const auto info = diffuse::Model::load(run, l).info();
  EXPECT_EQ(info.step, 2);
  EXPECT_EQ(info.channels, 1);  // tiny-test: 16x16x1
  EXPECT_EQ(info.height, 16);
  const auto again = diffuse::resume_training(run, 3);
  EXPECT_EQ(again.step, 3);
  // A second new run into the same folder is refused, and nothing there is lost.
  EXPECT_NE(error_of([&] { diffuse::train(cfg); }).find("--resume"), std::string::npos);
  EXPECT_EQ(diffuse::Model::load(run, l).info().step, 3);
  EXPECT_NE(error_of([&] { diffuse::train(R"({"stepz": 3})"); }).find("stepz"), std::string::npos);
  diffuse::remove_tree(dir.string());
}
