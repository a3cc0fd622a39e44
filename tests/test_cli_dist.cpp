// Data-parallel training end to end: `diffuse train` as two Gloo processes on 127.0.0.1 against
// one process with the same global batch and data order, resume at another number of processes,
// and a killed rank that must make the other exit with an error instead of hanging.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli_support.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/dist/launcher.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/safetensors.h"
#include "diffuse/io/checkpoint.h"

namespace fs = std::filesystem;
using namespace diffuse;

namespace {

using Result = CliResult;

Result run(const std::string& args) {
  return run_cli(args, "cli_dist");
}

// A few steps of the tiny U-Net on random pixels; no dropout, so the runs are deterministic.
std::string train_args(const std::string& out, int64_t steps) {
  return "train --model tiny-test --data synthetic --batch 8 --steps " + std::to_string(steps) +
         " --lr 1e-3 --warmup 0 --seed 3 --dropout 0 --log-every 2 --sample-every 0"
         " --ckpt-every 0 --device cpu --threads 1 --dist-timeout 30 --out " +
         out;
}

std::map<std::string, torch::Tensor> weights(const std::string& run, int64_t step,
                                             const std::string& which = "unet") {
  return load_safetensors(run + "/checkpoints/" + checkpoint_dir_name(step) + "/" + which +
                          "/diffusion_pytorch_model.safetensors")
      .tensors;
}

struct Diff {
  double max = 0, mean = 0;  // of |a - b| over every weight
};

Diff weight_diff(const std::map<std::string, torch::Tensor>& a,
                 const std::map<std::string, torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  Diff d;
  int64_t n = 0;
  for (const auto& [k, v] : a) {
    auto e = (v - b.at(k)).abs().to(torch::kFloat64);
    d.max = std::max(d.max, e.max().item<double>());
    d.mean += e.sum().item<double>();
    n += e.numel();
  }
  d.mean /= n;
  return d;
}

// Same weights to float tolerance. The ranks' averaged half-batch gradients differ from the
// one-process gradient by rounding (~1e-6 relative), but AdamW divides by sqrt(v): where a gradient
// is near zero (attention's key biases have exactly zero gradient in exact arithmetic) rounding
// moves a weight by up to the learning rate. So: every weight within 5e-5, 1/80 of what 4 steps of
// 1e-3 can move it, and the mean difference within 1e-7.
void expect_same_weights(const std::map<std::string, torch::Tensor>& a,
                         const std::map<std::string, torch::Tensor>& b, const std::string& what) {
  const auto d = weight_diff(a, b);
  EXPECT_LT(d.max, 5e-5) << what;
  EXPECT_LT(d.mean, 1e-7) << what;
}

std::vector<nlohmann::json> log_lines(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_file(run + "/log.jsonl"));
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

class CliDist : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() / ("diffuse_cli_dist_test_" + std::to_string(::getpid())))
                .string();
    remove_tree(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { remove_tree(root_); }
  std::string root_;
};

}  // namespace

TEST_F(CliDist, TwoGlooProcessesMatchOneProcessAndResumeAtAnotherWorldSize) {
  const auto one = root_ + "/one", two = root_ + "/two", half = root_ + "/half";
  auto r1 = run(train_args(one, 4));
  ASSERT_EQ(r1.status, 0) << r1.output;
  auto r2 = run(train_args(two, 4) + " --nproc 2");
  ASSERT_EQ(r2.status, 0) << r2.output;
  // Rank 0 alone speaks.
  const std::string says = "on 2 processes";
  ASSERT_NE(r2.output.find(says), std::string::npos) << r2.output;
  EXPECT_EQ(r2.output.find(says), r2.output.rfind(says)) << r2.output;

  const auto w1 = weights(one, 4), w2 = weights(two, 4);
  expect_same_weights(w1, w2, "unet");
  expect_same_weights(weights(one, 4, "unet_ema"), weights(two, 4, "unet_ema"), "unet_ema");
  // The logged loss and gradient norm are the global ones.
  const auto l1 = log_lines(one), l2 = log_lines(two);
  ASSERT_EQ(l1.size(), 2u);
  ASSERT_EQ(l2.size(), 2u);
  for (size_t i = 0; i < l1.size(); ++i) {
    EXPECT_EQ(l1[i]["step"], l2[i]["step"]);
    EXPECT_NEAR(l1[i]["loss"].get<double>(), l2[i]["loss"].get<double>(), 1e-5);
    EXPECT_NEAR(l1[i]["grad_norm"].get<double>(), l2[i]["grad_norm"].get<double>(), 1e-4);
  }

  // Half the steps on two processes, the rest on one, ends where the one-process run did.
  auto h = run(train_args(half, 2) + " --nproc 2");
  ASSERT_EQ(h.status, 0) << h.output;
  const auto apart = weight_diff(w1, weights(half, 2));  // what 2 steps change: far off
  EXPECT_GT(apart.max, 1e-3);
  EXPECT_GT(apart.mean, 1e-4);
  h = run("train --resume " + half + " --steps 4 --device cpu --threads 1");
  ASSERT_EQ(h.status, 0) << h.output;
  expect_same_weights(w1, weights(half, 4), "resumed on 1 process");
}

TEST_F(CliDist, KilledRankMakesTheOtherExitWithAnError) {
  const int port = free_tcp_port();
  const auto out = root_ + "/run";
  std::vector<std::string> args = {
      DIFFUSE_CLI_PATH, "train", "--model",        "tiny-test", "--data",      "synthetic",
      "--batch",        "8",     "--steps",        "1000000",   "--log-every", "1",
      "--sample-every", "0",     "--ckpt-every",   "0",         "--device",    "cpu",
      "--threads",      "1",     "--dist-timeout", "10",        "--out",       out};
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int r = 0; r < 2; ++r) {
    logs.push_back(root_ + "/rank" + std::to_string(r) + ".log");
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.push_back(*e);
    env.push_back("RANK=" + std::to_string(r));
    env.push_back("WORLD_SIZE=2");
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back("MASTER_PORT=" + std::to_string(port));
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int fd = ::open(logs.back().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(fd);
    pids.push_back(pid);
  }
  // Both train (rank 0 has logged a step), then rank 1 dies.
  using clock = std::chrono::steady_clock;
  auto until = clock::now() + std::chrono::seconds(90);
  while (clock::now() < until &&
         !(fs::exists(out + "/log.jsonl") && fs::file_size(out + "/log.jsonl") > 0))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const bool started = fs::exists(out + "/log.jsonl") && fs::file_size(out + "/log.jsonl") > 0;
  ::kill(pids[1], SIGKILL);
  ::waitpid(pids[1], nullptr, 0);
  ASSERT_TRUE(started) << read_file(logs[0]) << read_file(logs[1]);

  int status = 0;
  const auto killed_at = clock::now();
  until = killed_at + std::chrono::seconds(60);
  pid_t done = 0;
  while (clock::now() < until && (done = ::waitpid(pids[0], &status, WNOHANG)) == 0)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    ::kill(pids[0], SIGKILL);
    ::waitpid(pids[0], nullptr, 0);
    FAIL() << "rank 0 still running 60 s after rank 1 was killed:\n" << read_file(logs[0]);
  }
  const double secs = std::chrono::duration<double>(clock::now() - killed_at).count();
  const auto msg = read_file(logs[0]);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << msg;
  EXPECT_NE(msg.find("distributed training failed on rank 0 of 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("another rank died or stalled"), std::string::npos) << msg;
  std::cerr << "rank 0 exited " << secs << " s after rank 1 was killed\n";
}

TEST_F(CliDist, LauncherReportsAFailedRank) {
  auto r =
      run(train_args(root_ + "/run", 2) + " --nproc 2 --data idx:" + root_ + "/missing-idx3-ubyte");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("missing-idx3-ubyte"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--nproc 2: rank"), std::string::npos) << r.output;
  r = run(train_args(root_ + "/run", 2) + " --nproc 2 --batch 7");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("--batch 7 (the global batch) must be divisible by the 2 processes"),
            std::string::npos)
      << r.output;
}
