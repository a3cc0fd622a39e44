// The gradient all-reduce of data-parallel training: after backward every rank holds the mean over
// the ranks of each parameter's gradient. Gradients are copied into flat buckets of about
// bucket_bytes, in reverse parameter order (roughly the order backward produces them), and a
// tensor hook launches a bucket's all-reduce as soon as its last gradient arrives, so the
// communication overlaps the rest of the backward pass. Buckets are launched strictly in index
// order, so every rank issues the same collectives in the same order.
#pragma once
#include <torch/torch.h>

#include <mutex>
#include <vector>

#include "diffuse/dist/process_group.h"

namespace diffuse {

class GradReducer {
 public:
  GradReducer(std::vector<torch::Tensor> params, DistGroup& group,
              int64_t bucket_bytes = int64_t{25} << 20);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // After backward: launches what the hooks have not (parameters without a gradient this step
  // contribute zeros), waits for every bucket and writes the mean gradients into .grad.
  void finish();
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // Buckets the hooks sent during the last backward pass, before finish() (the overlap).
  int64_t sent_during_backward() const { return sent_during_backward_; }

 private:
  struct Slot {
    int64_t bucket, offset, numel;
  };
  struct Bucket {
    torch::Tensor flat;          // (numel) the gradients of its parameters, end to end
    std::vector<size_t> params;  // indices into params_
    int64_t waiting = 0;         // gradients still to arrive this step
    C10dGroup::Pending pending;  // set once launched
  };

  void on_grad(size_t i, const torch::Tensor& grad);
  void launch_ready();  // launches buckets in order while the next one is complete
  void reset();

  std::vector<torch::Tensor> params_;
  std::vector<Slot> slots_;
  std::vector<bool> arrived_;
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  int64_t sent_during_backward_ = 0;
  std::vector<unsigned> hooks_;
  DistGroup& group_;
  std::mutex mu_;  // hooks run on autograd's threads
};

}  // namespace diffuse
