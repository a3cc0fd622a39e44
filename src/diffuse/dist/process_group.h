// Data-parallel training across processes and machines on torch's own distributed engine (c10d):
// where this process stands in the job (the launcher's environment variables), and the process
// group its ranks share.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "diffuse/dist/c10d_group.h"

namespace diffuse {

// What `diffuse train` takes about distribution. The defaults here are the only place they are
// written: the CLI's option table reads them from a default-constructed DistOptions.
struct DistOptions {
  int64_t nproc = 0;             // > 1: start this many local worker processes
  std::string backend = "auto";  // auto (nccl on CUDA, gloo on the CPU) | gloo | nccl
  double timeout = 60;           // seconds a rank waits for the others before it gives up
};

// Where this process stands in the job, as torchrun-style launchers say it.
struct DistEnv {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;  // among the ranks of this machine
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  // From RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; without
  // WORLD_SIZE, one process. Malformed or inconsistent values throw, naming the variable.
  static DistEnv from_environment();
  bool distributed() const { return world_size > 1; }
};

// "auto" -> nccl for CUDA devices, gloo otherwise; errors for names this build lacks.
std::string resolve_backend(const std::string& backend, const torch::Device& device);

// The ranks of one job. Every call is a collective: all ranks make the same calls in the same
// order. A rank that dies or stalls makes the others throw diffuse::Error within the timeout.
class DistGroup {
 public:
  DistGroup(const DistEnv& env, const std::string& backend, double timeout_s);

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const DistEnv& env() const { return env_; }
  bool is_main() const { return env_.rank == 0; }
  const std::string& backend() const { return backend_; }

  // In-place sum over the ranks; the async form returns a wait() that throws on failure.
  C10dGroup::Pending allreduce_sum_async(const torch::Tensor& t);
  void allreduce_sum(const torch::Tensor& t);
  // In-place copy of rank 0's tensors to every rank.
  void broadcast_from_main(const std::vector<torch::Tensor>& tensors);

 private:
  // Adds what most likely happened to an error from c10d.
  C10dGroup::Pending explain(C10dGroup::Pending wait) const;

  DistEnv env_;
  std::string backend_;
  double timeout_s_;
  std::unique_ptr<C10dGroup> group_;
};

}  // namespace diffuse
