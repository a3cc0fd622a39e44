#include "diffuse/dist/grad_reducer.h"

#include "diffuse/core/error.h"

namespace diffuse {

GradReducer::GradReducer(std::vector<torch::Tensor> params, DistGroup& group, int64_t bucket_bytes)
    : params_(std::move(params)), slots_(params_.size()), arrived_(params_.size()), group_(group) {
  check(bucket_bytes > 0, "gradient buckets must hold at least one byte, got ", bucket_bytes);
  // A bucket holds one dtype on one device; a new one starts when either changes or it is full.
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const auto& p = params_[k];
    check(p.requires_grad(), "gradient all-reduce: parameter ", k, " does not require a gradient");
    const bool fresh = buckets_.empty() || bytes >= bucket_bytes ||
                       params_[buckets_.back().params.front()].scalar_type() != p.scalar_type() ||
                       params_[buckets_.back().params.front()].device() != p.device();
    if (fresh) {
      buckets_.emplace_back();
      bytes = 0;
    }
    auto& b = buckets_.back();
    int64_t offset = 0;
    for (size_t j : b.params) offset += params_[j].numel();
    slots_[k] = {static_cast<int64_t>(buckets_.size()) - 1, offset, p.numel()};
    b.params.push_back(k);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  for (auto& b : buckets_) {
    const auto& first = params_[b.params.front()];
    int64_t numel = 0;
    for (size_t j : b.params) numel += params_[j].numel();
    b.flat = torch::zeros({numel}, first.options().requires_grad(false));
  }
  reset();
  for (size_t k = 0; k < params_.size(); ++k)
    hooks_.push_back(params_[k].register_hook([this, k](torch::Tensor g) { on_grad(k, g); }));
}

GradReducer::~GradReducer() {
  for (size_t k = 0; k < params_.size(); ++k) params_[k].remove_hook(hooks_[k]);
}

void GradReducer::reset() {
  for (auto& b : buckets_) {
    b.waiting = static_cast<int64_t>(b.params.size());
    b.pending = nullptr;
  }
  std::fill(arrived_.begin(), arrived_.end(), false);
  next_launch_ = 0;
}

// grad: the gradient of params_[i] as backward computed it, before it is accumulated into .grad.
void GradReducer::on_grad(size_t i, const torch::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto& s = slots_[i];
  auto& b = buckets_[s.bucket];
  check(!b.pending,
        "gradient all-reduce: a gradient arrived after its bucket was sent (a second "
        "backward pass in one step?)");
  auto dst = b.flat.narrow(0, s.offset, s.numel);
  if (arrived_[i]) {
    dst.add_(grad.reshape({-1}));
    return;
  }
  dst.copy_(grad.reshape({-1}));
  arrived_[i] = true;
  if (--b.waiting == 0) launch_ready();
}

void GradReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].waiting == 0) {
    auto& b = buckets_[next_launch_++];
    b.pending = group_.allreduce_sum_async(b.flat);
  }
}

void GradReducer::finish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    sent_during_backward_ = static_cast<int64_t>(next_launch_);
    for (size_t k = 0; k < params_.size(); ++k) {
      if (arrived_[k]) continue;
      const auto& s = slots_[k];
      buckets_[s.bucket].flat.narrow(0, s.offset, s.numel).zero_();
      arrived_[k] = true;
      --buckets_[s.bucket].waiting;
    }
    launch_ready();
  }
  const double inv_world = 1.0 / group_.world_size();
  for (auto& b : buckets_) {
    b.pending();
    b.flat.mul_(inv_world);
  }
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < params_.size(); ++k) {
    const auto& s = slots_[k];
    auto mean = buckets_[s.bucket].flat.narrow(0, s.offset, s.numel).view(params_[k].sizes());
    auto& g = params_[k].mutable_grad();
    if (g.defined())
      g.copy_(mean);
    else
      g = mean.clone();
  }
  reset();
}

}  // namespace diffuse
