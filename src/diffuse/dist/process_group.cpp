#include "diffuse/dist/process_group.h"

#include <cstdlib>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

// An integer environment variable in [lo, hi]; `fallback` when unset.
int env_int(const char* name, int fallback, int lo, int hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  const std::string s(v);
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == s.size() && x >= lo && x <= hi, "environment variable ", name,
        ": expected an integer in [", lo, ", ", hi, "], got '", s, "'");
  return static_cast<int>(x);
}

}  // namespace

DistEnv DistEnv::from_environment() {
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  e.rank = env_int("RANK", 0, 0, e.world_size - 1);
  check(e.world_size == 1 || std::getenv("RANK"), "environment variable WORLD_SIZE is ",
        e.world_size, " but RANK is not set");
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size, 1, e.world_size);
  e.local_rank = env_int("LOCAL_RANK", e.rank % e.local_world_size, 0, e.local_world_size - 1);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", e.master_port, 1, 65535);
  return e;
}

std::string resolve_backend(const std::string& backend, const torch::Device& device) {
  check(backend == "auto" || backend == "gloo" || backend == "nccl", "--backend: unknown '",
        backend, "' (expected auto, gloo or nccl)");
  const std::string b = backend != "auto" ? backend : device.is_cuda() ? "nccl" : "gloo";
  check(C10dGroup::supports(b), "--backend ", b, ": not available in this build of diffuse",
        b == "nccl" ? " (NCCL needs a CUDA build of LibTorch)" : "");
  check(b != "nccl" || device.is_cuda(), "--backend nccl needs a CUDA device, not ", device.str());
  return b;
}

DistGroup::DistGroup(const DistEnv& env, const std::string& backend, double timeout_s)
    : env_(env), backend_(backend), timeout_s_(timeout_s) {
  check(timeout_s > 0, "--dist-timeout must be > 0 seconds, got ", timeout_s);
  C10dGroup::Options o;
  o.backend = backend;
  o.master_addr = env.master_addr;
  o.master_port = env.master_port;
  o.rank = env.rank;
  o.world_size = env.world_size;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  group_ = std::make_unique<C10dGroup>(o);
}

C10dGroup::Pending DistGroup::explain(C10dGroup::Pending wait) const {
  return [wait = std::move(wait), rank = env_.rank, world = env_.world_size, timeout = timeout_s_] {
    try {
      wait();
    } catch (const Error& e) {
      fail("distributed training failed on rank ", rank, " of ", world,
           ": another rank died or stalled (its connection dropped, or no answer within "
           "--dist-timeout ",
           timeout, " s). ", e.what());
    }
  };
}

C10dGroup::Pending DistGroup::allreduce_sum_async(const torch::Tensor& t) {
  try {
    return explain(group_->allreduce_sum({t}));
  } catch (const Error&) {
    C10dGroup::Pending rethrow = [e = std::current_exception()] { std::rethrow_exception(e); };
    return explain(rethrow);
  }
}

void DistGroup::allreduce_sum(const torch::Tensor& t) {
  allreduce_sum_async(t)();
}

void DistGroup::broadcast_from_main(const std::vector<torch::Tensor>& tensors) {
  for (const auto& t : tensors) {
    C10dGroup::Pending wait;
    try {
      wait = explain(group_->broadcast({t}, 0));
    } catch (const Error&) {
      wait = explain([e = std::current_exception()] { std::rethrow_exception(e); });
    }
    wait();
  }
}

}  // namespace diffuse
