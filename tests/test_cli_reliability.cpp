// Validation before the work: outputs that cannot be written and inputs that are not finite or do
// not fit the model are refused before sampling or training starts, naming the file and why; and
// the run folder's lock (one trainer per folder) with the clean-up of interrupted checkpoints.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/io/npy.h"
#include "diffuse/io/run_lock.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const char* kTrain =
    "train --data synthetic --model tiny-test --batch 4 --lr 1e-3 --warmup 0 --log-every 1 "
    "--sample-every 0 --device cpu --threads 1 --seed 3";

class Reliability : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ =
        (fs::temp_directory_path() / ("diffuse_rel_test_" + std::to_string(::getpid()))).string();
    remove_tree(root_);
    fs::create_directories(root_);
    // The golden tiny U-Net (16x16, 3 channels) in diffusers' layout.
    model_ = root_ + "/unet";
    fs::create_directories(model_);
    const std::string data = DIFFUSE_TEST_DATA;
    auto cfg = nlohmann::json::parse(read_file(data + "/unet_tiny.json"))["config"];
    cfg["_class_name"] = "UNet2DModel";
    write_file_atomic(model_ + "/config.json", cfg.dump(2));
    write_file_atomic(model_ + "/diffusion_pytorch_model.safetensors",
                      read_file(data + "/unet_tiny.safetensors"));
    // A plain file: no folder can be made below it, whoever runs the test (root included).
    blocker_ = root_ + "/plain-file";
    write_file_atomic(blocker_, "not a folder\n");
  }
  void TearDown() override { remove_tree(root_); }
  CliResult run(const std::string& args) { return run_cli(args, "rel"); }
  std::string sample(const std::string& extra) {
    return "sample --model " + model_ + " --device cpu --threads 1 " + extra;
  }
  std::string root_, model_, blocker_;
};

}  // namespace

TEST_F(Reliability, UnwritableSampleOutputsFailBeforeSampling) {
  // 4096 images of 1000 DDPM steps would take hours: only a check before sampling returns fast.
  const auto bad = blocker_ + "/x.png";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run(sample("--sampler ddpm --steps 1000 --n 4096 --out " + bad));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out " + bad)) << r.output;
  EXPECT_TRUE(contains(r.output, blocker_ + " is not a folder")) << r.output;
  EXPECT_FALSE(contains(r.output, "diffuse: sampling")) << r.output;
  EXPECT_LT(seconds, 60) << r.output;
  // /proc takes no new files, even from root.
  r = run(sample("--n 2 --steps 2 --out " + root_ + "/ok.png --save-npy /proc/diffuse-x.npy"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--save-npy /proc/diffuse-x.npy: cannot create a file in /proc"))
      << r.output;
  EXPECT_FALSE(fs::exists(root_ + "/ok.png"));
  r = run(sample("--n 2 --steps 2 --out " + root_ + "/ok.png --out-dir " + blocker_ + "/pngs"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out-dir")) << r.output;
  r = run(sample("--n 2 --steps 2 --out " + root_));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "is a folder, not a file name")) << r.output;
  // A missing folder is made, and the grid lands in it.
  r = run(sample("--n 2 --steps 2 --out " + root_ + "/new/sub/grid.png"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(root_ + "/new/sub/grid.png"));
}

TEST_F(Reliability, UnwritableOutputsOfOtherCommandsFailFirst) {
  save_npy(root_ + "/z.npy", torch::zeros({1, 3, 16, 16}));
  auto r = run("encode --model " + model_ + " --images " + root_ + "/z.npy --steps 2 --out " +
               blocker_ + "/z.npy --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out " + blocker_ + "/z.npy")) << r.output;
  r = run("interpolate --model " + model_ + " --from " + root_ + "/z.npy --to " + root_ +
          "/z.npy --steps 2 --out " + root_ + "/s.png --save-npy " + blocker_ + "/s.npy");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--save-npy")) << r.output;
  // eval nll checks its folder before it loads any data (this dataset does not exist).
  r = run("eval nll --model " + model_ + " --data idx:" + root_ + "/nothing --out " + blocker_ +
          "/eval --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out " + blocker_ + "/eval")) << r.output;
  EXPECT_FALSE(contains(r.output, "nothing")) << r.output;
  r = run("eval fd --samples " + root_ + "/z.npy --classifier " + root_ + "/clf --out " + blocker_ +
          "/fd --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out " + blocker_ + "/fd")) << r.output;
  EXPECT_FALSE(contains(r.output, "training one now")) << r.output;
  r = run(std::string(kTrain) + " --steps 2 --out " + blocker_ + "/run");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--out " + blocker_ + "/run")) << r.output;
  fs::create_directories(root_ + "/run");
  write_file_atomic(root_ + "/run/log.jsonl", "");
  r = run("report " + root_ + "/run --out " + blocker_ + "/r.html");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, blocker_ + "/r.html")) << r.output;
}

TEST_F(Reliability, FreeSpaceIsCheckedForWhatIsKnown) {
  try {
    check_writable_output(root_ + "/big.npy", uint64_t{1} << 62, "--save-npy");
    FAIL() << "4 EiB fit";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "--save-npy")) << e.what();
    EXPECT_TRUE(contains(e.what(), "free on the file system of " + root_)) << e.what();
    EXPECT_TRUE(contains(e.what(), root_ + "/big.npy")) << e.what();
  }
  EXPECT_NO_THROW(check_writable_output(root_ + "/small.npy", 1024, "--save-npy"));
  // The probe file does not stay behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(root_), fs::directory_iterator()), 2);
}

TEST_F(Reliability, NonFiniteInputsAreRefusedNamingTheIndex) {
  auto noise = torch::zeros({2, 3, 16, 16});
  noise.view(-1)[777] = std::numeric_limits<float>::quiet_NaN();
  noise.view(-1)[900] = std::numeric_limits<float>::infinity();
  save_npy(root_ + "/nan.npy", noise);
  auto r = run(sample("--init-noise " + root_ + "/nan.npy --steps 2 --out " + root_ + "/g.png"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, root_ + "/nan.npy")) << r.output;
  EXPECT_TRUE(contains(r.output, "2 of 1536 values are not finite")) << r.output;
  EXPECT_TRUE(contains(r.output, "flat index 777")) << r.output;
  EXPECT_FALSE(fs::exists(root_ + "/g.png"));
  auto images = torch::zeros({1, 3, 16, 16});
  images.view(-1)[5] = -std::numeric_limits<float>::infinity();
  save_npy(root_ + "/inf.npy", images);
  r = run("encode --model " + model_ + " --images " + root_ + "/inf.npy --steps 2 --out " + root_ +
          "/z.npy --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "flat index 5")) << r.output;
  EXPECT_TRUE(contains(r.output, "-inf")) << r.output;
  save_npy(root_ + "/zi.npy", images[0]);
  r = run("interpolate --model " + model_ + " --from " + root_ + "/zi.npy --to " + root_ +
          "/zi.npy --out " + root_ + "/s.png --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, root_ + "/zi.npy: 1 of 768 values")) << r.output;
}

TEST_F(Reliability, InputsOfAnotherShapeOrDtypeAreRefused) {
  save_npy(root_ + "/small.npy", torch::zeros({2, 3, 8, 8}));
  auto r = run(sample("--init-noise " + root_ + "/small.npy --steps 2 --out " + root_ + "/g.png"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "noise is 8x8, the model samples 16x16")) << r.output;
  save_npy(root_ + "/int.npy", torch::zeros({2, 3, 16, 16}, torch::kInt64));
  r = run(sample("--init-noise " + root_ + "/int.npy --steps 2 --out " + root_ + "/g.png"));
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "dtype")) << r.output;
  // Images: the model's size, uint8 or floats in [-1, 1].
  r = run("encode --model " + model_ + " --images " + root_ + "/small.npy --steps 2 --out " +
          root_ + "/z.npy --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "images are 8x8, the model's sample_size is 16")) << r.output;
  save_npy(root_ + "/pixels.npy", torch::full({1, 3, 16, 16}, 200.0));
  r = run("encode --model " + model_ + " --images " + root_ + "/pixels.npy --steps 2 --out " +
          root_ + "/z.npy --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "must lie in [-1, 1]")) << r.output;
  save_npy(root_ + "/pixels8.npy", torch::full({1, 3, 16, 16}, 200, torch::kUInt8));
  r = run("encode --model " + model_ + " --images " + root_ + "/pixels8.npy --steps 2 --out " +
          root_ + "/z.npy --device cpu");
  EXPECT_EQ(r.status, 0) << r.output;
  save_npy(root_ + "/zsmall.npy", torch::zeros({3, 8, 8}));
  r = run("interpolate --model " + model_ + " --from " + root_ + "/zsmall.npy --to " + root_ +
          "/zsmall.npy --out " + root_ + "/s.png --device cpu");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "(3, 16, 16)")) << r.output;
}

TEST_F(Reliability, ASecondTrainerIsRefusedWhileTheLockIsHeld) {
  const auto run_dir = root_ + "/run";
  auto r = run(std::string(kTrain) + " --steps 2 --out " + run_dir);
  ASSERT_EQ(r.status, 0) << r.output;
  {
    RunLock held(run_dir, "test");
    const auto me = "pid " + std::to_string(::getpid()) + " on host ";
    r = run("train --resume " + run_dir + " --steps 4");
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_TRUE(contains(r.output, "another trainer is writing into this run folder")) << r.output;
    EXPECT_TRUE(contains(r.output, me)) << r.output;
    EXPECT_FALSE(contains(r.output, "resumed")) << r.output;
    r = run(std::string(kTrain) + " --steps 2 --out " + run_dir);
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_TRUE(contains(r.output, me)) << r.output;
    // In-process, too: flock locks belong to the open file, so a second open conflicts.
    EXPECT_THROW(RunLock(run_dir, "again"), Error);
  }
  // Released: leftovers of interrupted saves are cleaned at the start, then the run continues.
  const auto ck = run_dir + "/checkpoints";
  fs::create_directories(ck + "/.tmp-step_00000003/unet");
  write_file_atomic(ck + "/.tmp-step_00000003/unet/partial", "x");
  fs::rename(ck + "/step_00000002", ck + "/.old-step_00000002");
  r = run("train --resume " + run_dir + " --steps 4");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "removed " + ck + "/.tmp-step_00000003")) << r.output;
  EXPECT_TRUE(contains(r.output, "restored " + ck + "/step_00000002")) << r.output;
  EXPECT_TRUE(contains(r.output, "at step 2")) << r.output;
  EXPECT_FALSE(fs::exists(ck + "/.tmp-step_00000003"));
  EXPECT_FALSE(fs::exists(ck + "/.old-step_00000002"));
  EXPECT_TRUE(fs::exists(ck + "/step_00000004/manifest.json"));
  EXPECT_TRUE(contains(read_file(run_dir + "/.lock"), "pid "));
}

TEST_F(Reliability, AFailedCheckpointLeavesNoTemporaryFolder) {
  // A file where the checkpoint's unet/ folder must go makes the save fail halfway.
  const auto run_dir = root_ + "/run";
  fs::create_directories(run_dir + "/checkpoints/.tmp-step_00000001");
  CheckpointFiles files;
  files.texts["trainer_state.json"] = "{}";
  files.texts["unet/config.json"] = "{}";
  files.texts["aaa"] = "first";
  const auto tmp = run_dir + "/checkpoints/.tmp-step_00000001";
  // save_checkpoint clears the folder, then writes aaa, then fails making unet/ under a file.
  files.texts["trainer_state.json/x"] = "cannot";
  EXPECT_ANY_THROW(save_checkpoint(run_dir, 1, files, 2));
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(list_checkpoints(run_dir).empty());
}
