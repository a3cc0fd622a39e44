#include "diffuse/data/loader.h"

#include <limits>
#include <random>

#include "diffuse/core/error.h"

namespace diffuse {

namespace {

// SplitMix64's finaliser: a bijective mix whose outputs pass BigCrush, so hashes of consecutive
// (seed, epoch, position) tuples are independent-looking.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Distinct tags keep the permutation and flip streams unrelated for the same (seed, epoch).
enum : uint64_t { kPermutationTag = 1, kFlipTag = 2 };

uint64_t hash(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b = 0) {
  return mix64(mix64(mix64(mix64(seed) ^ tag) ^ a) ^ b);
}

// Uniform in [0, bound) by rejection; std::uniform_int_distribution is implementation-defined,
// which would make the order differ between standard libraries.
uint64_t uniform_below(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() / bound * bound;
  uint64_t r;
  do r = gen();
  while (r >= limit);
  return r % bound;
}

}  // namespace

std::vector<int64_t> Loader::permutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 gen(hash(seed, kPermutationTag, static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i)  // Fisher-Yates
    std::swap(order[i], order[uniform_below(gen, static_cast<uint64_t>(i) + 1)]);
  return order;
}

bool Loader::flipped(uint64_t seed, int64_t epoch, int64_t position) {
  return hash(seed, kFlipTag, static_cast<uint64_t>(epoch), static_cast<uint64_t>(position)) >> 63;
}

Loader::Loader(Dataset data, LoaderOptions options, LoaderState start)
    : data_(std::move(data)), opt_(std::move(options)) {
  check(data_.images.defined() && data_.images.dim() == 4 &&
            data_.images.scalar_type() == torch::kUInt8,
        "data loader: dataset '", data_.name, "' must hold (N, C, H, W) uint8 images");
  const int64_t n = data_.size();
  check(n > 0, "data loader: dataset '", data_.name, "' is empty");
  check(!data_.labels.defined() || (data_.labels.dim() == 1 && data_.labels.size(0) == n),
        "data loader: dataset '", data_.name, "' has ", data_.labels.numel(), " labels for ", n,
        " images");
  check(opt_.batch_size > 0, "--batch-size must be positive, got ", opt_.batch_size);
  check(!opt_.drop_last || opt_.batch_size <= n, "--batch-size ", opt_.batch_size, " exceeds the ",
        n, " images of dataset '", data_.name, "'");
  check(opt_.pad_to == 0 || (opt_.pad_to >= data_.height() && opt_.pad_to >= data_.width()),
        "--pad-to ", opt_.pad_to, " is smaller than the ", data_.height(), "x", data_.width(),
        " images of dataset '", data_.name, "'");
  check(opt_.prefetch >= 1, "data loader: prefetch must be at least 1, got ", opt_.prefetch);
  check(opt_.num_shards >= 1 && opt_.shard >= 0 && opt_.shard < opt_.num_shards,
        "data loader: shard ", opt_.shard, " of ", opt_.num_shards, " does not exist");
  check(!opt_.device.is_cuda() || torch::cuda::is_available(),
        "data loader: CUDA device requested but CUDA is not available");
  data_.images = data_.images.contiguous();
  if (data_.labels.defined()) data_.labels = data_.labels.to(torch::kInt64).contiguous();
  reset(start);
}

Loader::~Loader() {
  stop();
}

int64_t Loader::batches_per_epoch() const {
  const int64_t n = data_.size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

LoaderState Loader::normalize(LoaderState s) const {
  const int64_t n = data_.size();
  if (s.position >= n || (opt_.drop_last && n - s.position < opt_.batch_size))
    return {s.epoch + 1, 0};
  return s;
}

LoaderState Loader::state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return consumed_;
}

void Loader::reset(LoaderState s) {
  check(s.epoch >= 0 && s.position >= 0 && s.position <= data_.size(),
        "data loader: invalid resume state (epoch ", s.epoch, ", position ", s.position,
        ") for a dataset of ", data_.size(), " images");
  stop();
  const LoaderState from = normalize(s);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.clear();
    consumed_ = from;
  }
  start(from);
}

void Loader::start(LoaderState from) {
  stopping_ = false;
  worker_ = std::thread([this, from] { work(from); });
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

// x: (count', C, H', W') float32 in [-1, 1] on the CPU (pinned when bound for CUDA), this shard's
// slice of the count samples at s.
Batch Loader::make_batch(const std::vector<int64_t>& order, LoaderState s, int64_t count) const {
  const int64_t lo = count * opt_.shard / opt_.num_shards;
  s.position += lo;
  count = count * (opt_.shard + 1) / opt_.num_shards - lo;
  auto idx =
      torch::from_blob(const_cast<int64_t*>(order.data() + s.position), {count}, torch::kInt64);
  auto x = data_.images.index_select(0, idx);  // (count, C, H, W) uint8
  if (opt_.random_flip) {
    auto mask = torch::empty({count}, torch::kBool);
    auto* m = mask.data_ptr<bool>();
    for (int64_t i = 0; i < count; ++i) m[i] = flipped(opt_.seed, s.epoch, s.position + i);
    x = torch::where(mask.view({count, 1, 1, 1}), x.flip({3}), x);
  }
  auto xf = x.to(torch::kFloat32).div_(127.5).sub_(1.0);
  if (opt_.pad_to > 0) {
    const int64_t ph = opt_.pad_to - data_.height(), pw = opt_.pad_to - data_.width();
    xf = torch::constant_pad_nd(xf, {pw / 2, pw - pw / 2, ph / 2, ph - ph / 2}, -1.0);
  }
  Batch b;
  b.x = xf;
  if (data_.labels.defined()) b.y = data_.labels.index_select(0, idx);
  if (opt_.device.is_cuda()) {
    b.x = b.x.pin_memory();
    if (b.y.defined()) b.y = b.y.pin_memory();
  }
  return b;
}

void Loader::work(LoaderState s) {
  try {
    std::vector<int64_t> order;
    int64_t order_epoch = -1;
    const int64_t n = data_.size();
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock,
                 [&] { return stopping_ || static_cast<int64_t>(queue_.size()) < opt_.prefetch; });
        if (stopping_) return;
      }
      if (order_epoch != s.epoch) {
        order = permutation(opt_.seed, s.epoch, n);
        order_epoch = s.epoch;
      }
      const int64_t count = std::min(opt_.batch_size, n - s.position);
      Item item;
      item.batch = make_batch(order, s, count);
      s = normalize({s.epoch, s.position + count});
      item.after = s;
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(item));
      }
      cv_.notify_all();
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Item item;
      item.error = std::current_exception();
      queue_.push_back(std::move(item));
    }
    cv_.notify_all();
  }
}

Batch Loader::next() {
  Item item;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    // A failure stays at the front: every later call reports it too.
    if (queue_.front().error) std::rethrow_exception(queue_.front().error);
    item = std::move(queue_.front());
    queue_.pop_front();
    consumed_ = item.after;
  }
  cv_.notify_all();
  // The copy from pinned memory is queued on the caller's current stream, so it is ordered with
  // the caller's kernels and overlaps with the work already queued.
  if (opt_.device.is_cuda()) {
    item.batch.x = item.batch.x.to(opt_.device, /*non_blocking=*/true);
    if (item.batch.y.defined()) item.batch.y = item.batch.y.to(opt_.device, /*non_blocking=*/true);
  }
  return item.batch;
}

}  // namespace diffuse
