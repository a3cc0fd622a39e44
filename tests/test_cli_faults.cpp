// Fault injection on `diffuse train`, bounded in time: SIGKILL at seeded random moments (during
// steps, checkpoint writes, the manifest and the rename) followed by --resume; a write failure
// while checkpointing (RLIMIT_FSIZE makes write(2) fail with EFBIG, the path ENOSPC takes); and
// damaged files in the newest checkpoint or the run folder. A resumed run must match an
// uninterrupted one bit for bit on the CPU.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "cli_support.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/checkpoint.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

constexpr int64_t kSteps = 8;
// Every 2 steps, so that a kill finds a checkpoint being written as often as a step running.
const std::string kTrain =
    "train --data synthetic --model tiny-test --batch 4 --lr 1e-3 --warmup 0 --log-every 1 "
    "--sample-every 0 --ckpt-every 2 --keep 3 --device cpu --threads 1 --seed 3";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The loss logged for each step; a step logged twice (before a kill and again after the resume)
// keeps its last line, the resumed run's. Unreadable lines (one cut by a kill) are skipped.
std::map<int64_t, double> logged_losses(const std::string& run_dir) {
  std::map<int64_t, double> out;
  std::istringstream in(read_file(run_dir + "/log.jsonl"));
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step") && j.contains("loss"))
      out[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return out;
}

// The tensors of a checkpoint as bytes (trainer_state.json holds the wall time, which differs).
std::string weights_of(const std::string& ck) {
  return read_file(ck + "/unet/diffusion_pytorch_model.safetensors") +
         read_file(ck + "/unet_ema/diffusion_pytorch_model.safetensors") +
         read_file(ck + "/optimizer.safetensors") + read_file(ck + "/rng.safetensors");
}

pid_t spawn_cli(const std::string& args, const std::string& log) {
  const std::string cmd =
      "exec " + std::string(DIFFUSE_CLI_PATH) + " " + args + " > " + log + " 2>&1";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int64_t step_of_dir(const std::string& dir) {
  return std::stoll(fs::path(dir).filename().string().substr(5));
}

class Faults : public ::testing::Test {
 public:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("diffuse_faults_" + std::to_string(::getpid()))).string();
    remove_tree(root_);
    fs::create_directories(root_);
    const pid_t pid =
        spawn_cli(kTrain + " --steps " + std::to_string(kSteps) + " --out " + ref(), log());
    ASSERT_GT(pid, 0);
    const auto t0 = wait_for_training(ref());
    int status = 0;
    ::waitpid(pid, &status, 0);
    train_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(log());
    ref_losses_ = logged_losses(ref());
    ASSERT_EQ(ref_losses_.size(), static_cast<size_t>(kSteps));
  }
  // Training has started once log.jsonl exists (the loop opens it before the first step).
  static std::chrono::steady_clock::time_point wait_for_training(const std::string& run_dir) {
    for (int i = 0; i < 12000 && !fs::exists(run_dir + "/log.jsonl"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return std::chrono::steady_clock::now();
  }
  static std::string log() { return root_ + "/spawned.log"; }
  static void TearDownTestSuite() { remove_tree(root_); }
  static std::string ref() { return root_ + "/reference"; }
  // The resumed run's losses equal the reference's at every step, and so do its final weights.
  static void expect_matches_reference(const std::string& run_dir, const std::string& context) {
    const auto losses = logged_losses(run_dir);
    for (const auto& [step, loss] : ref_losses_) {
      ASSERT_TRUE(losses.count(step)) << context << ": step " << step << " not logged";
      EXPECT_EQ(losses.at(step), loss) << context << ": step " << step;
    }
    const auto last = checkpoint_dir_name(kSteps);
    EXPECT_TRUE(weights_of(run_dir + "/checkpoints/" + last) ==
                weights_of(ref() + "/checkpoints/" + last))
        << context << ": final weights differ";
  }
  static inline std::string root_;
  static inline double train_seconds_ = 0;  // the reference run's, from its first step to exit
  static inline std::map<int64_t, double> ref_losses_;
};

}  // namespace

// One kill: spawn, let training start, SIGKILL after `delay` s, then --resume (or start again
// when no checkpoint was complete) and compare with the reference. Returns whether a checkpoint
// was being written at the kill (its .tmp- folder was there).
// `wait` returns when the kill is due: after a delay, or once a path appears.
bool kill_and_resume(const std::string& run_dir, const std::function<void(pid_t)>& wait,
                     const std::string& context, int* resumed) {
  const auto args = kTrain + " --steps " + std::to_string(kSteps) + " --out " + run_dir;
  const pid_t pid = spawn_cli(args, Faults::log());
  EXPECT_GT(pid, 0);
  Faults::wait_for_training(run_dir);
  wait(pid);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  bool mid_checkpoint = false;
  if (fs::is_directory(run_dir + "/checkpoints"))
    for (auto& e : fs::directory_iterator(run_dir + "/checkpoints"))
      mid_checkpoint |= e.path().filename().string().rfind(".tmp-", 0) == 0;
  const auto complete = list_checkpoints(run_dir);
  CliResult r;
  if (complete.empty()) {
    r = run_cli(args, "faults");
  } else {
    ++*resumed;
    r = run_cli("train --resume " + run_dir, "faults");
    EXPECT_TRUE(contains(r.output, "at step " + std::to_string(step_of_dir(complete[0]))))
        << context << "\n"
        << r.output;
  }
  EXPECT_EQ(r.status, 0) << context << "\n" << r.output;
  return mid_checkpoint;
}

TEST_F(Faults, KillAtRandomMomentsThenResumeMatchesAnUninterruptedRun) {
  // Kills land uniformly over the reference's training (first step to exit): during steps,
  // checkpoint writes, the manifest and the rename. 8 by default, to keep the suite short on a
  // loaded machine; DIFFUSE_TEST_KILLS=20 runs more.
  const char* env = std::getenv("DIFFUSE_TEST_KILLS");
  const int kills = env ? std::atoi(env) : 8;
  std::mt19937_64 rng(20261204);
  std::uniform_real_distribution<double> when(0.0, train_seconds_);
  int resumed = 0, mid_checkpoint = 0;
  for (int k = 0; k < kills; ++k) {
    const auto run_dir = root_ + "/kill" + std::to_string(k);
    const double delay = when(rng);
    const auto context = "kill " + std::to_string(k) + " after " + std::to_string(delay) + " s";
    auto sleep = [&](pid_t) { std::this_thread::sleep_for(std::chrono::duration<double>(delay)); };
    mid_checkpoint += kill_and_resume(run_dir, sleep, context, &resumed);
    expect_matches_reference(run_dir, context);
    for (auto& e : fs::directory_iterator(run_dir + "/checkpoints"))
      EXPECT_NE(e.path().filename().string()[0], '.') << context << ": " << e.path() << " left";
    remove_tree(run_dir);
  }
  std::cout << "kills: " << kills << " over " << train_seconds_ << " s of training; resumed "
            << resumed << " (the others found no complete checkpoint and started again); "
            << mid_checkpoint << " interrupted a checkpoint being written\n";
  EXPECT_GT(resumed, 0);
}

TEST_F(Faults, KillsInsideACheckpointWriteThenResume) {
  // Polled every 0.2 ms: inside the folder's writing (its first file), and once its manifest is
  // there (the fsyncs and the rename remain). A kill that comes too late still has to resume.
  const std::vector<std::pair<std::string, std::string>> moments = {
      {".tmp-step_00000004", "writing step 4"},
      {".tmp-step_00000004/manifest.json", "between step 4's manifest and its rename"},
      {".tmp-step_00000006/optimizer.safetensors", "writing step 6"},
      {".tmp-step_00000006/manifest.json", "between step 6's manifest and its rename"}};
  int resumed = 0, caught = 0;
  for (size_t k = 0; k < moments.size(); ++k) {
    const auto run_dir = root_ + "/inside" + std::to_string(k);
    const auto target = run_dir + "/checkpoints/" + moments[k].first;
    auto until_there = [&](pid_t pid) {
      while (!fs::exists(target) && ::waitpid(pid, nullptr, WNOHANG) == 0)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    };
    caught += kill_and_resume(run_dir, until_there, moments[k].second, &resumed);
    expect_matches_reference(run_dir, moments[k].second);
    remove_tree(run_dir);
  }
  std::cout << "kills inside a checkpoint write: " << moments.size() << ", caught with its .tmp- "
            << "folder present: " << caught << ", resumed: " << resumed << "\n";
  EXPECT_EQ(resumed, static_cast<int>(moments.size()));
}

TEST_F(Faults, WriteFailureDuringACheckpointKeepsThePreviousOne) {
  const auto run_dir = root_ + "/efbig";
  auto r = run_cli(kTrain + " --steps 2 --out " + run_dir, "faults");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto ck = run_dir + "/checkpoints";
  const auto before = weights_of(ck + "/step_00000002");
  ASSERT_GT(read_file(ck + "/step_00000002/unet/diffusion_pytorch_model.safetensors").size(),
            size_t{64} << 10);
  // Files up to 16 KiB (dash's 512-byte blocks; 32 KiB in bash's) can be written: config and
  // log; the weights cannot. SIGXFSZ ignored (which exec keeps) makes write(2) return EFBIG,
  // failing as it would with ENOSPC.
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  const auto log = root_ + "/efbig.log";
  const int rc = std::system(("sh -c 'ulimit -f 32; exec " + std::string(DIFFUSE_CLI_PATH) +
                              " train --resume " + run_dir + " --steps 6' > " + log + " 2>&1")
                                 .c_str());
  ::signal(SIGXFSZ, old_handler);
  const auto out = read_file(log);
  EXPECT_EQ(WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, 2) << out;
  EXPECT_TRUE(contains(out, "File too large")) << out;
  EXPECT_TRUE(contains(out, ".tmp-step_00000004")) << out;
  EXPECT_EQ(list_checkpoints(run_dir), std::vector<std::string>{ck + "/step_00000002"});
  EXPECT_FALSE(fs::exists(ck + "/.tmp-step_00000004"));
  EXPECT_TRUE(weights_of(ck + "/step_00000002") == before);
  EXPECT_NO_THROW(load_checkpoint(ck + "/step_00000002"));
  r = run_cli("train --resume " + run_dir + " --steps " + std::to_string(kSteps), "faults");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "at step 2")) << r.output;
  expect_matches_reference(run_dir, "after EFBIG");
}

namespace {

void copy_tree(const std::string& from, const std::string& to) {
  remove_tree(to);
  ASSERT_EQ(std::system(("cp -a " + from + " " + to).c_str()), 0);
}

void truncate_to_half(const std::string& path) {
  const auto bytes = read_file(path);
  write_file_atomic(path, bytes.substr(0, bytes.size() / 2));
}

}  // namespace

TEST_F(Faults, DamagedNewestCheckpointIsNamedAndTheOlderOneUsed) {
  const auto base = root_ + "/damage_base";
  auto r = run_cli(kTrain + " --steps 4 --out " + base, "faults");  // step_2 and step_4
  ASSERT_EQ(r.status, 0) << r.output;
  const auto run_dir = root_ + "/damaged";
  for (const std::string rel :
       {"trainer_state.json", "rng.safetensors", "optimizer.safetensors", "unet/config.json",
        "unet_ema/diffusion_pytorch_model.safetensors", "manifest.json"}) {
    copy_tree(base, run_dir);
    const auto path = run_dir + "/checkpoints/step_00000004/" + rel;
    truncate_to_half(path);
    const auto damaged = read_file(path);
    // To step 3: the damaged step_4 stays, untouched, beside the new step_3.
    r = run_cli("train --resume " + run_dir + " --steps 3", "faults");
    ASSERT_EQ(r.status, 0) << rel << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "skipping damaged checkpoint")) << rel << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, path)) << rel << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "at step 2")) << rel << "\n" << r.output;
    EXPECT_EQ(read_file(path), damaged) << rel;
    EXPECT_EQ(logged_losses(run_dir).at(3), ref_losses_.at(3)) << rel;
  }
  // Continued to the end, the run passes step 4 again and replaces the damaged folder.
  r = run_cli("train --resume " + run_dir + " --steps " + std::to_string(kSteps), "faults");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "at step 3")) << r.output;
  expect_matches_reference(run_dir, "after a damaged manifest");
}

TEST_F(Faults, DamagedRunFilesAreNamedAndNothingIsOverwritten) {
  const auto base = root_ + "/damage_base2";
  auto r = run_cli(kTrain + " --steps 4 --out " + base, "faults");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto run_dir = root_ + "/damaged2";
  // config.json cut short: refused by name; no checkpoint is touched.
  copy_tree(base, run_dir);
  truncate_to_half(run_dir + "/config.json");
  const auto manifest = read_file(run_dir + "/checkpoints/step_00000004/manifest.json");
  r = run_cli("train --resume " + run_dir + " --steps 6", "faults");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, run_dir + "/config.json: not valid JSON")) << r.output;
  EXPECT_EQ(read_file(run_dir + "/checkpoints/step_00000004/manifest.json"), manifest);
  EXPECT_EQ(list_checkpoints(run_dir).size(), 2u);
  // Every checkpoint damaged: refused, and both stay as they were.
  copy_tree(base, run_dir);
  for (const auto& ck : list_checkpoints(run_dir)) truncate_to_half(ck + "/optimizer.safetensors");
  r = run_cli("train --resume " + run_dir + " --steps 6", "faults");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "no complete checkpoint")) << r.output;
  EXPECT_EQ(list_checkpoints(run_dir).size(), 2u);
  // log.jsonl cut mid-line by a kill: the cut line stays (unreadable), the new ones are whole.
  copy_tree(base, run_dir);
  const auto log = read_file(run_dir + "/log.jsonl");
  write_file_atomic(run_dir + "/log.jsonl", log.substr(0, log.size() - 20));
  r = run_cli("train --resume " + run_dir + " --steps 6", "faults");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto losses = logged_losses(run_dir);
  EXPECT_FALSE(losses.count(4));
  for (int64_t step : {1, 2, 3, 5, 6}) {
    ASSERT_TRUE(losses.count(step)) << step << "\n" << read_file(run_dir + "/log.jsonl");
    EXPECT_EQ(losses.at(step), ref_losses_.at(step)) << step;
  }
  EXPECT_TRUE(contains(read_file(run_dir + "/log.jsonl"), log.substr(0, log.size() - 20) + "\n"));
}
