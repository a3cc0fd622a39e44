// The `diffuse` program end to end: the golden tiny U-Net in a diffusers-style folder, sampled from
// given noise into a PNG grid and an .npy; encode/interpolate; and clear errors for bad input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/data/dataset.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/image.h"
#include "diffuse/io/npy.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

using Result = CliResult;

Result run(const std::string& args) {
  return run_cli(args, "cli");
}

// The golden tiny U-Net as diffusers' save_pretrained lays it out.
std::string golden_model_dir(const std::string& root) {
  const auto dir = root + "/unet";
  fs::create_directories(dir);
  const std::string data = DIFFUSE_TEST_DATA;
  auto j = nlohmann::json::parse(read_file(data + "/unet_tiny.json"));
  auto cfg = j["config"];
  cfg["_class_name"] = "UNet2DModel";
  write_file_atomic(dir + "/config.json", cfg.dump(2));
  write_file_atomic(dir + "/diffusion_pytorch_model.safetensors",
                    read_file(data + "/unet_tiny.safetensors"));
  return dir;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        (fs::temp_directory_path() / ("diffuse_cli_test_" + std::to_string(::getpid()))).string();
    remove_tree(root_);
    fs::create_directories(root_);
    model_ = golden_model_dir(root_);
  }
  void TearDown() override { remove_tree(root_); }
  std::string root_, model_;
};

}  // namespace

TEST_F(Cli, SampleFromInitNoiseWritesPngAndNpy) {
  torch::manual_seed(0);
  auto noise = torch::randn({3, 3, 16, 16});
  save_npy(root_ + "/noise.npy", noise);
  auto r = run("sample --model " + model_ + " --init-noise " + root_ +
               "/noise.npy --sampler ddim --steps 5 --out " + root_ + "/grid.png --save-npy " +
               root_ + "/samples.npy --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  auto samples = load_npy(root_ + "/samples.npy");
  EXPECT_EQ(samples.sizes(), (std::vector<int64_t>{3, 3, 16, 16}));
  EXPECT_TRUE(torch::isfinite(samples).all().item<bool>());
  auto grid = load_image(root_ + "/grid.png", 3);
  EXPECT_EQ(grid.sizes(), make_grid(samples, 2).sizes());
  EXPECT_TRUE(torch::equal(grid, make_grid(samples, 2)));
  // The same noise gives the same samples.
  auto r2 =
      run("sample --model " + model_ + " --init-noise " + root_ + "/noise.npy --steps 5 --out " +
          root_ + "/grid2.png --save-npy " + root_ + "/samples2.npy --device cpu --threads 1");
  ASSERT_EQ(r2.status, 0) << r2.output;
  EXPECT_TRUE(torch::equal(load_npy(root_ + "/samples2.npy"), samples));
  // EDM's Euler on DDIM's timesteps is DDIM (eta 0); heun with 3 levels evaluates 5 times.
  auto r3 = run("sample --model " + model_ + " --init-noise " + root_ +
                "/noise.npy --sampler euler --spacing leading --steps 5 --out " + root_ +
                "/grid3.png --save-npy " + root_ + "/samples3.npy --device cpu --threads 1");
  ASSERT_EQ(r3.status, 0) << r3.output;
  EXPECT_LT((load_npy(root_ + "/samples3.npy") - samples).abs().max().item<double>(), 1e-4);
  auto r4 = run("sample --model " + model_ + " --init-noise " + root_ +
                "/noise.npy --sampler heun --steps 3 --out " + root_ + "/grid4.png --save-npy " +
                root_ + "/samples4.npy --device cpu --threads 1");
  ASSERT_EQ(r4.status, 0) << r4.output;
  EXPECT_TRUE(torch::isfinite(load_npy(root_ + "/samples4.npy")).all().item<bool>());
  EXPECT_NE(r4.output.find("heun (3 steps)"), std::string::npos) << r4.output;
}

TEST_F(Cli, EncodeAndInterpolate) {
  torch::manual_seed(1);
  save_npy(root_ + "/images.npy", torch::rand({2, 3, 16, 16}) * 2 - 1);
  auto r = run("encode --model " + model_ + " --images " + root_ + "/images.npy --steps 10 --out " +
               root_ + "/z.npy --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("reconstruction"), std::string::npos) << r.output;
  auto z = load_npy(root_ + "/z.npy");
  ASSERT_EQ(z.sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  save_npy(root_ + "/a.npy", z[0]);
  save_npy(root_ + "/b.npy", z[1]);
  r = run("interpolate --model " + model_ + " --from " + root_ + "/a.npy --to " + root_ +
          "/b.npy --frames 4 --steps 5 --out " + root_ + "/strip.png --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(load_image(root_ + "/strip.png", 3).sizes(),
            make_grid(torch::zeros({4, 3, 16, 16}), 4).sizes());
}

TEST_F(Cli, BadInputGivesClearErrors) {
  auto r =
      run("sample --model " + model_ + " --sampler lms --out " + root_ + "/x.png --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--sampler"), std::string::npos) << r.output;
  r = run("sample --model " + model_ + " --steps 5000 --out " + root_ + "/x.png --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--steps"), std::string::npos) << r.output;
  save_npy(root_ + "/bad.npy", torch::zeros({2, 1, 16, 16}));
  r = run("sample --model " + model_ + " --init-noise " + root_ + "/bad.npy --out " + root_ +
          "/x.png --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("channels"), std::string::npos) << r.output;
  r = run("sample --model " + root_ + "/nowhere --out " + root_ + "/x.png");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("nowhere"), std::string::npos) << r.output;
  r = run("train --learning-rate 1");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown option --learning-rate"), std::string::npos) << r.output;
  r = run("frobnicate");
  EXPECT_EQ(r.status, 2);
  r = run("train --data idx:" + root_ + "/missing-idx3-ubyte --out " + root_ + "/run --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("missing-idx3-ubyte"), std::string::npos) << r.output;
  // On resume the recipe is the run's: the list of what may change comes from the option table.
  r = run("train --resume " + root_ + "/norun --lr 0.1");
  EXPECT_EQ(r.status, 2);
  for (const auto* part : {"--lr cannot change when resuming", "--steps, --time-limit",
                           "--cuda-graph", "--nproc, --backend, --dist-timeout"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  EXPECT_EQ(r.output.find("--lr,"), std::string::npos) << r.output;
}

// eval fd end to end with a quickly trained classifier: the scores and reference points are
// printed, and each setting lands in its own JSON file (fd_samples.json for an .npy of samples).
TEST_F(Cli, EvalFdScoresSampleFilesIntoTheirOwnFile) {
  const auto clf = root_ + "/classifier";
  auto r = run("eval train-classifier --out " + clf + " --epochs 1 --device cpu");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("test accuracy"), std::string::npos) << r.output;
  // Real training images stored as a model's samples are: float in [-1, 1], padded to 32x32.
  auto train = load_dataset("fashion-mnist", "train", 0);
  auto samples = torch::constant_pad_nd(
      train.images.slice(0, 20000, 20500).to(torch::kFloat32) / 127.5 - 1.0, {2, 2, 2, 2}, -1.0);
  save_npy(root_ + "/real.npy", samples);
  save_npy(root_ + "/noise.npy", torch::rand({500, 1, 28, 28}) * 2 - 1);
  for (const auto* name : {"real", "noise"}) {
    const auto out = root_ + "/eval_" + name;
    r = run("eval fd --samples " + root_ + "/" + name + ".npy --classifier " + clf + " --out " +
            out + " --device cpu");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("FD-FMNIST: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("train vs test (the floor)"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("not FID"), std::string::npos) << r.output;
    ASSERT_TRUE(fs::exists(out + "/fd_samples.json")) << r.output;
  }
  auto real = nlohmann::json::parse(read_file(root_ + "/eval_real/fd_samples.json"));
  auto noise = nlohmann::json::parse(read_file(root_ + "/eval_noise/fd_samples.json"));
  EXPECT_EQ(real["n"], 500);
  // Real images sit far closer to the test set than uniform noise does, and below the blur point.
  const double fd_real = real["fd_fmnist"], fd_noise = noise["fd_fmnist"];
  EXPECT_LT(fd_real * 5, fd_noise) << fd_real << " vs " << fd_noise;
  EXPECT_LT(fd_real, real["reference"]["fd_fmnist_blur_vs_test"].get<double>());
  EXPECT_GT(real["is_fmnist"].get<double>(), noise["is_fmnist"].get<double>());

  r = run("eval fd --samples " + root_ + "/absent.npy --classifier " + clf + " --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("absent.npy"), std::string::npos) << r.output;
}

// A class-conditional model end to end: trained a few steps on a labelled idx dataset with label
// dropout and a loss weighting, then sampled for one class with guidance and for every class (one
// grid column per class); --class on an unconditional model or out of range is refused.
TEST_F(Cli, ClassConditionalTrainAndGuidedSampling) {
  torch::manual_seed(2);
  const int64_t n = 12;
  auto img = (torch::rand({n, 16, 16}) * 255).to(torch::kUInt8).contiguous();
  std::string images = {0, 0, 8, 3}, labels = {0, 0, 8, 1};
  for (int64_t d : {n, int64_t{16}, int64_t{16}})
    for (int s = 24; s >= 0; s -= 8) images.push_back(static_cast<char>((d >> s) & 0xff));
  images.append(reinterpret_cast<const char*>(img.data_ptr<uint8_t>()), img.numel());
  for (int s = 24; s >= 0; s -= 8) labels.push_back(static_cast<char>((n >> s) & 0xff));
  for (int64_t i = 0; i < n; ++i) labels.push_back(static_cast<char>(i % 3));
  write_file_atomic(root_ + "/images-idx3-ubyte", images);
  write_file_atomic(root_ + "/labels-idx1-ubyte", labels);
  const auto run_dir = root_ + "/cond";
  auto r = run("train --data idx:" + root_ + "/images-idx3-ubyte --model tiny-test --class-cond " +
               "--label-dropout 0.2 --loss-weighting min-snr-5 --steps 3 --batch 4 --warmup 0 " +
               "--sample-every 0 --ckpt-every 0 --out " + run_dir + " --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run("sample --model " + run_dir + " --class 1 --guidance 3 --steps 3 --n 2 --out " + root_ +
          "/one.png --save-npy " + root_ + "/one.npy --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  auto one = load_npy(root_ + "/one.npy");
  EXPECT_EQ(one.sizes(), (std::vector<int64_t>{2, 1, 16, 16}));
  EXPECT_TRUE(torch::isfinite(one).all().item<bool>());
  r = run("sample --model " + run_dir + " --class all --steps 2 --n 6 --out " + root_ +
          "/all.png --save-npy " + root_ + "/all.npy --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  auto all = load_npy(root_ + "/all.npy");
  EXPECT_TRUE(torch::equal(load_image(root_ + "/all.png", 1), make_grid(all, 3)));
  // Another guidance scale changes the samples; the same one reproduces them.
  r = run("sample --model " + run_dir + " --class 1 --guidance 0 --steps 3 --n 2 --out " + root_ +
          "/zero.png --save-npy " + root_ + "/zero.npy --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(torch::equal(load_npy(root_ + "/zero.npy"), one));

  r = run("sample --model " + run_dir + " --class 3 --steps 2 --out " + root_ +
          "/x.png --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--class 3 is out of range"), std::string::npos) << r.output;
  r = run("sample --model " + model_ + " --class 1 --steps 2 --out " + root_ +
          "/x.png --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("not class-conditional"), std::string::npos) << r.output;
  r = run("train --data idx:" + root_ + "/images-idx3-ubyte --model tiny-test --steps 1 " +
          "--loss-weighting min-snr --out " + root_ + "/bad --device cpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--loss-weighting"), std::string::npos) << r.output;
}

// The recipe's options end to end: a run with a wsd schedule, logit-normal t and power EMAs
// records them, and `diffuse ema` turns its snapshots into a model that `diffuse sample` reads.
TEST_F(Cli, RecipeOptionsAndPosthocEma) {
  const auto run_dir = root_ + "/recipe";
  auto r = run("train --data synthetic --model tiny-test --steps 6 --batch 4 --warmup 0 " +
               std::string("--lr-schedule wsd --lr-decay-fraction 0.5 --timestep-sampler ") +
               "logit-normal --ema-power 0.05,0.10 --ema-snapshot-every 2 --sample-every 0 " +
               "--ckpt-every 0 --out " + run_dir + " --device cpu --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  auto cfg = nlohmann::json::parse(read_file(run_dir + "/config.json"));
  EXPECT_EQ(cfg.at("lr_schedule"), "wsd");
  EXPECT_EQ(cfg.at("timestep_sampler"), "logit-normal");
  EXPECT_EQ(cfg.at("ema_power"), "0.05,0.10");
  r = run("ema --run " + run_dir + " --sigma-rel 0.07 --out " + root_ + "/posthoc");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("from 6 snapshots"), std::string::npos) << r.output;
  r = run("sample --model " + root_ + "/posthoc --steps 2 --n 2 --out " + root_ +
          "/posthoc.png --device cpu --threads 1");
  EXPECT_EQ(r.status, 0) << r.output;
  r = run("ema --run " + root_ + "/none --sigma-rel 0.07 --out " + root_ + "/nothing");
  EXPECT_EQ(r.status, 2);
  r = run("train --resume " + run_dir + " --lr-schedule cosine");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--lr-schedule cannot change"), std::string::npos) << r.output;
}

TEST_F(Cli, HelpDocumentsEveryCommand) {
  auto r = run("--help");
  EXPECT_EQ(r.status, 0);
  for (const auto* cmd : {"train", "sample", "encode", "interpolate", "eval nll", "eval fd",
                          "report", "bench", "ema"}) {
    EXPECT_NE(r.output.find(cmd), std::string::npos) << cmd;
    auto h = run(std::string(cmd) + " --help");
    EXPECT_EQ(h.status, 0) << cmd;
    EXPECT_NE(h.output.find("usage: diffuse"), std::string::npos) << cmd;
  }
  auto t = run("train --help");
  EXPECT_NE(t.output.find("[default: 0.0002]"), std::string::npos) << t.output;
  // sample --help lists every sampler with its reference.
  auto s = run("sample --help");
  for (const auto* part :
       {"  ddpm: ", "  ddim: ", "  dpm++2m: ", "  euler: ", "  heun: ", "  euler-a: ",
        "Ho et al. 2020 Algorithm 2", "Nichol & Dhariwal 2021", "Song et al. 2021 eq. 12",
        "Lu et al. 2022 Algorithm 2", "Karras et al. 2022 (EDM) Algorithm 1", "2N - 1",
        "sample_euler_ancestral", "karras"})
    EXPECT_NE(s.output.find(part), std::string::npos) << part << "\n" << s.output;
  EXPECT_NE(t.output.find("--loss-weighting"), std::string::npos) << t.output;
  EXPECT_NE(t.output.find("--label-dropout"), std::string::npos) << t.output;
  EXPECT_NE(s.output.find("out(null) + S (out(class) - out(null))"), std::string::npos) << s.output;
}

TEST_F(Cli, ImageGuidedSamplingAndSamplerOptionErrors) {
  torch::manual_seed(3);
  auto image = torch::rand({1, 3, 16, 16}) * 2 - 1;
  save_npy(root_ + "/image.npy", image);
  const auto base = "sample --model " + model_ + " --init-image " + root_ +
                    "/image.npy --n 2 --steps 5 --device cpu --threads 1 --out " + root_ + "/g.png";
  // SDEdit at strength 0 is the image itself.
  auto r = run(base + " --strength 0 --save-npy " + root_ + "/s0.npy");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(torch::equal(load_npy(root_ + "/s0.npy"), image.expand({2, 3, 16, 16})));
  r = run(base + " --strength 0.6 --save-npy " + root_ + "/s6.npy");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GT((load_npy(root_ + "/s6.npy") - image).abs().max().item<double>(), 1e-3);
  // RePaint keeps the known (mask 1) half exactly.
  auto mask = torch::zeros({1, 1, 16, 16});
  mask.narrow(3, 0, 8).fill_(1.0);
  save_npy(root_ + "/mask.npy", mask);
  r = run(base + " --sampler ddpm --mask " + root_ + "/mask.npy --jump-length 2 --jump-n-sample 2" +
          " --save-npy " + root_ + "/rp.npy");
  ASSERT_EQ(r.status, 0) << r.output;
  auto rp = load_npy(root_ + "/rp.npy");
  EXPECT_TRUE(torch::equal(rp.narrow(3, 0, 8), image.expand({2, 3, 16, 16}).narrow(3, 0, 8)));
  EXPECT_GT((rp - image).abs().narrow(3, 8, 8).max().item<double>(), 1e-3);
  // Bad input names the option.
  save_npy(root_ + "/small.npy", torch::zeros({1, 1, 8, 8}));
  const std::vector<std::pair<std::string, std::string>> bad = {
      {" --strength 1.5", "--strength"},
      {" --sampler ddpm --mask " + root_ + "/small.npy", "--mask"},
      {" --mask " + root_ + "/mask.npy", "--sampler ddpm"},
      {" --strength 0.5 --mask " + root_ + "/mask.npy", "exactly one"},
      {" --strength 0.5 --jump-length 3", "need --mask"}};
  for (const auto& [extra, want] : bad) {
    r = run(base + extra);
    EXPECT_EQ(r.status, 2) << extra;
    EXPECT_NE(r.output.find(want), std::string::npos) << extra << "\n" << r.output;
  }
  r = run("sample --model " + model_ + " --init-image " + root_ + "/small.npy --strength 0.5 " +
          "--device cpu --out " + root_ + "/g.png");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("does not match the model"), std::string::npos) << r.output;
  r = run("sample --model " + model_ + " --strength 0.5 --device cpu --out " + root_ + "/g.png");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--init-image"), std::string::npos) << r.output;
  r = run("sample --model " + model_ + " --sampler ddim --churn 5 --device cpu --out " + root_ +
          "/g.png");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("--churn"), std::string::npos) << r.output;
}
