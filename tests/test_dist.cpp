// The data-parallel building blocks on real c10d Gloo groups: two ranks as two threads of this
// process, joined through a TCPStore on 127.0.0.1. The launcher's environment is parsed strictly.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <functional>
#include <thread>

#include "diffuse/dist/grad_reducer.h"
#include "diffuse/dist/launcher.h"
#include "diffuse/dist/process_group.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

// Runs fn(group) as ranks 0..world-1 on threads; rethrows the first failure.
void run_ranks(int world, const std::function<void(DistGroup&)>& fn) {
  const int port = free_tcp_port();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        DistEnv env;
        env.rank = r;
        env.world_size = world;
        env.local_rank = r;
        env.local_world_size = world;
        env.master_port = port;
        DistGroup group(env, "gloo", 20);
        fn(group);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

void set_env(const std::map<std::string, std::string>& vars) {
  for (const auto* k :
       {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
    ::unsetenv(k);
  for (const auto& [k, v] : vars) ::setenv(k.c_str(), v.c_str(), 1);
}

}  // namespace

TEST(DistEnv, ReadsTheLauncherVariablesStrictly) {
  set_env({});
  auto e = DistEnv::from_environment();
  EXPECT_FALSE(e.distributed());
  EXPECT_EQ(e.rank, 0);
  set_env({{"RANK", "3"},
           {"WORLD_SIZE", "8"},
           {"LOCAL_RANK", "1"},
           {"LOCAL_WORLD_SIZE", "2"},
           {"MASTER_ADDR", "10.0.0.7"},
           {"MASTER_PORT", "29511"}});
  e = DistEnv::from_environment();
  EXPECT_TRUE(e.distributed());
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 2);
  EXPECT_EQ(e.master_addr, "10.0.0.7");
  EXPECT_EQ(e.master_port, 29511);
  set_env({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
  expect_error([] { DistEnv::from_environment(); }, {"RANK", "[0, 1]", "'2'"});
  set_env({{"WORLD_SIZE", "2"}});
  expect_error([] { DistEnv::from_environment(); }, {"RANK is not set"});
  set_env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "http"}});
  expect_error([] { DistEnv::from_environment(); }, {"MASTER_PORT", "'http'"});
  set_env({});
  expect_error([] { resolve_backend("mpi", torch::kCPU); }, {"--backend", "mpi"});
  expect_error([] { resolve_backend("nccl", torch::kCPU); }, {"--backend nccl"});
  EXPECT_EQ(resolve_backend("auto", torch::kCPU), "gloo");
}

// The mean over the ranks lands in every parameter's .grad, bucket by bucket: small buckets
// force several all-reduces launched from the hooks during backward. A parameter that one rank
// does not use counts as a zero gradient there.
TEST(GradReducer, AveragesGradientsOverRanksInBuckets) {
  run_ranks(2, [](DistGroup& group) {
    const int r = group.rank();
    std::vector<torch::Tensor> params;
    for (int64_t n : {3, 5, 7, 2, 11}) params.push_back(torch::zeros({n}).requires_grad_());
    params.push_back(torch::zeros({2, 3}).requires_grad_());
    GradReducer reducer(params, group, /*bucket_bytes=*/24);
    EXPECT_GE(reducer.num_buckets(), 4);
    for (int step = 0; step < 2; ++step) {
      // d(loss)/d(p_k) = (k + 1) * (r + 1) * (step + 1), except p_0 which only rank 1 uses.
      auto loss = torch::zeros({});
      for (size_t k = r == 0 ? 1 : 0; k < params.size(); ++k)
        loss = loss + params[k].sum() * double((k + 1) * (r + 1) * (step + 1));
      for (auto& p : params) p.mutable_grad() = torch::Tensor();
      loss.backward();
      reducer.finish();
      // Every bucket but the one holding p_0 (rank 0 never computes its gradient) was sent from
      // the hooks on rank 1, and on rank 0 those before it in launch order.
      if (r == 1) EXPECT_EQ(reducer.sent_during_backward(), reducer.num_buckets());
      if (r == 0) EXPECT_EQ(reducer.sent_during_backward(), reducer.num_buckets() - 1);
      for (size_t k = 0; k < params.size(); ++k) {
        const double expect = k == 0 ? 2.0 * (step + 1) / 2 : (k + 1) * 1.5 * (step + 1);
        ASSERT_TRUE(params[k].grad().defined()) << k;
        EXPECT_TRUE(torch::allclose(params[k].grad(), torch::full_like(params[k], expect), 0, 0))
            << "rank " << r << " step " << step << " param " << k << ": " << params[k].grad();
      }
    }
  });
}

TEST(DistGroup, BroadcastsFromRankZeroAndSums) {
  run_ranks(3, [](DistGroup& group) {
    auto a = torch::full({4}, double(group.rank() + 1));
    auto b = torch::arange(3, torch::kFloat64) * (group.rank() + 1);
    group.broadcast_from_main({a, b});
    EXPECT_TRUE(torch::equal(a, torch::ones({4})));
    EXPECT_TRUE(torch::equal(b, torch::arange(3, torch::kFloat64)));
    auto s = torch::full({2}, double(group.rank()));
    group.allreduce_sum(s);
    EXPECT_TRUE(torch::equal(s, torch::full({2}, 3.0)));
  });
}
