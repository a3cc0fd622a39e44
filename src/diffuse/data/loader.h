// Training batches computed ahead on a background thread. The stream of batches is a pure function
// of (seed, state): shuffling and flips are derived from hashes of (seed, epoch, position), so a
// run resumed from a saved LoaderState sees exactly the batches the uninterrupted run would have.
#pragma once
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "diffuse/data/dataset.h"

namespace diffuse {

struct LoaderOptions {
  int64_t batch_size = 128;
  uint64_t seed = 0;
  bool random_flip = false;  // horizontal, each image with probability 1/2
  int64_t pad_to = 0;        // pad H and W to this size with -1 (after scaling); 0: no padding
  bool drop_last = true;     // false: the last batch of an epoch may be smaller
  torch::Device device = torch::kCPU;
  int64_t prefetch = 3;  // batches computed ahead
  // Data parallelism: the stream of batches and its state stay global (batch_size samples of the
  // epoch's order per batch, identical on every rank); this loader materialises only its shard's
  // slice [count * shard / num_shards, count * (shard + 1) / num_shards) of each batch.
  int64_t shard = 0, num_shards = 1;
};

// Where the stream stands: the next batch starts at `position` in epoch `epoch`'s permutation.
struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;
};

inline bool operator==(const LoaderState& a, const LoaderState& b) {
  return a.epoch == b.epoch && a.position == b.position;
}

struct Batch {
  torch::Tensor x;  // (B, C, H, W) float32 in [-1, 1], on the loader's device
  torch::Tensor y;  // (B) int64 labels, or undefined for unlabelled data
};

class Loader {
 public:
  // Keeps a (shallow) copy of the dataset; throws diffuse::Error for invalid options.
  Loader(Dataset data, LoaderOptions options, LoaderState start = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch; rethrows any exception the background thread met.
  Batch next();
  // The state after the batches next() has returned so far (prefetched ones do not count).
  LoaderState state() const;
  // Continue from a state returned by state() (of this or an identically configured loader).
  void reset(LoaderState state);

  int64_t batches_per_epoch() const;
  const LoaderOptions& options() const { return opt_; }
  const Dataset& dataset() const { return data_; }

  // The sample order of an epoch: a permutation of 0..n-1 from (seed, epoch).
  static std::vector<int64_t> permutation(uint64_t seed, int64_t epoch, int64_t n);
  // Whether the sample at `position` of `epoch` is flipped (when random_flip is on).
  static bool flipped(uint64_t seed, int64_t epoch, int64_t position);

 private:
  struct Item {
    Batch batch;
    LoaderState after;
    std::exception_ptr error;
  };

  LoaderState normalize(LoaderState s) const;
  Batch make_batch(const std::vector<int64_t>& order, LoaderState s, int64_t count) const;
  void start(LoaderState from);
  void stop();
  void work(LoaderState from);

  Dataset data_;
  LoaderOptions opt_;
  LoaderState consumed_;

  std::thread worker_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
};

}  // namespace diffuse
