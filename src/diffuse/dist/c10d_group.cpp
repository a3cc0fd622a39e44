#include "diffuse/dist/c10d_group.h"

// c10d. The Gloo header needs gloo's own headers (Debian's libgloo-dev: the process group holds
// gloo objects only behind pointers, so their layout does not depend on gloo's version); NCCL's
// needs nccl.h, which CUDA builds find next to LibTorch.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if DIFFUSE_WITH_CUDA && __has_include(<nccl.h>)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#define DIFFUSE_WITH_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

#if DIFFUSE_TORCH_AT_LEAST(2, 0)
using C10dCollectives = c10d::Backend;  // 2.x: a ProcessGroup dispatches to Backends
#else
using C10dCollectives = c10d::ProcessGroup;  // 1.13: the process group runs the collectives
#endif

// c10d's errors carry a C++ backtrace; the message alone is what a user needs.
std::string message_of(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

struct C10dGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<C10dCollectives> group;
};

bool C10dGroup::supports(const std::string& backend) {
  if (backend == "gloo") return true;
#if DIFFUSE_WITH_NCCL
  if (backend == "nccl") return true;
#endif
  return false;
}

C10dGroup::C10dGroup(const Options& options) : opt_(options), impl_(std::make_unique<Impl>()) {
  check(supports(opt_.backend), "distributed backend '", opt_.backend,
        "' is not in this build (gloo", C10dGroup::supports("nccl") ? ", nccl" : "", ")");
  const std::string where = opt_.master_addr + ":" + std::to_string(opt_.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(opt_.master_port);
    so.isServer = opt_.rank == 0;
    so.numWorkers = static_cast<size_t>(opt_.world_size);
    so.waitWorkers = true;
    so.timeout = opt_.timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(opt_.master_addr, so);
  } catch (const std::exception& e) {
    fail("distributed: rank ", opt_.rank, " could not join the TCPStore at ", where, " (",
         message_of(e), ")");
  }
  try {
    if (opt_.backend == "gloo") {
      auto go = c10d::ProcessGroupGloo::Options::create(opt_.timeout);
      // Peers connect to the address this device binds: loopback for one machine, else the
      // interface GLOO_SOCKET_IFNAME names or the address the host name resolves to.
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname)
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (is_loopback(opt_.master_addr))
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      go->threads = 2;
      impl_->group =
          c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, opt_.rank, opt_.world_size, go);
    }
#if DIFFUSE_WITH_NCCL
    if (opt_.backend == "nccl") {
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = opt_.timeout;
      impl_->group =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, opt_.rank, opt_.world_size, no);
    }
#endif
  } catch (const std::exception& e) {
    fail("distributed: rank ", opt_.rank, " could not set up ", opt_.backend, " with ",
         opt_.world_size, " ranks through ", where, " (", message_of(e), ")");
  }
}

C10dGroup::~C10dGroup() = default;

namespace {

C10dGroup::Pending pending(c10::intrusive_ptr<c10d::Work> work, std::string what) {
  return [work = std::move(work), what = std::move(what)] {
    try {
      work->wait();
    } catch (const std::exception& e) {
      fail(what, " failed: ", message_of(e));
    }
  };
}

}  // namespace

C10dGroup::Pending C10dGroup::allreduce_sum(std::vector<torch::Tensor> tensors) {
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  const std::string what = opt_.backend + " all-reduce on rank " + std::to_string(opt_.rank);
  try {
    return pending(impl_->group->allreduce(tensors, o), what);
  } catch (const std::exception& e) {
    fail(what, " failed: ", message_of(e));
  }
}

C10dGroup::Pending C10dGroup::broadcast(std::vector<torch::Tensor> tensors, int root) {
  c10d::BroadcastOptions o;
  o.rootRank = root;
  const std::string what = opt_.backend + " broadcast on rank " + std::to_string(opt_.rank);
  try {
    return pending(impl_->group->broadcast(tensors, o), what);
  } catch (const std::exception& e) {
    fail(what, " failed: ", message_of(e));
  }
}

}  // namespace diffuse
