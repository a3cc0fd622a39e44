#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <set>
#include <thread>

#include "diffuse/core/error.h"
#include "diffuse/data/loader.h"
#include "support.h"

using namespace diffuse;
using namespace diffuse::testing;

namespace {

// Images whose label is their index, so batches reveal which images they hold.
Dataset indexed_dataset(int64_t n, std::vector<int64_t> chw = {1, 4, 5}, int64_t seed = 40) {
  Dataset ds;
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), chw.begin(), chw.end());
  ds.images = random_bytes(shape, seed);
  ds.labels = torch::arange(n, torch::kInt64);
  ds.num_classes = n;
  ds.name = "indexed";
  return ds;
}

std::vector<Batch> take(Loader& loader, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].x, b[i].x)) << "batch " << i;
    EXPECT_TRUE(torch::equal(a[i].y, b[i].y)) << "batch " << i;
  }
}

torch::Tensor scaled(const torch::Tensor& images) {
  return images.to(torch::kFloat32) / 127.5 - 1;
}

}  // namespace

TEST(Loader, BatchesAreScaledImagesInPermutationOrder) {
  const auto ds = indexed_dataset(30);
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.seed = 5;
  Loader loader(ds, opt);
  const auto order = Loader::permutation(5, 0, 30);
  for (int k = 0; k < 3; ++k) {
    const Batch b = loader.next();
    ASSERT_EQ(b.x.sizes(), (std::vector<int64_t>{8, 1, 4, 5}));
    EXPECT_EQ(b.x.scalar_type(), torch::kFloat32);
    EXPECT_GE(b.x.min().item<float>(), -1.0f);
    EXPECT_LE(b.x.max().item<float>(), 1.0f);
    const auto idx =
        torch::tensor(std::vector<int64_t>(order.begin() + 8 * k, order.begin() + 8 * k + 8));
    EXPECT_TRUE(torch::equal(b.y, idx));
    EXPECT_TRUE(torch::equal(b.x, scaled(ds.images.index_select(0, idx))));
  }
  // drop_last: 30 = 3 * 8 + 6, so the fourth batch opens epoch 1.
  EXPECT_EQ(loader.state(), (LoaderState{1, 0}));
  EXPECT_EQ(loader.batches_per_epoch(), 3);
  const Batch b = loader.next();
  const auto order1 = Loader::permutation(5, 1, 30);
  EXPECT_TRUE(
      torch::equal(b.y, torch::tensor(std::vector<int64_t>(order1.begin(), order1.begin() + 8))));
}

TEST(Loader, EveryImageOncePerEpoch) {
  const auto ds = indexed_dataset(50);
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.random_flip = true;
  opt.drop_last = false;
  Loader loader(ds, opt);
  EXPECT_EQ(loader.batches_per_epoch(), 7);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::vector<int> seen(50, 0);
    for (int k = 0; k < 7; ++k) {
      const Batch b = loader.next();
      EXPECT_EQ(b.x.size(0), k < 6 ? 8 : 2);
      for (int64_t i = 0; i < b.y.size(0); ++i) ++seen.at(b.y[i].item<int64_t>());
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 50) << "epoch " << epoch;
    EXPECT_EQ(loader.state(), (LoaderState{epoch + 1, 0}));
  }
  // With drop_last the leftover images differ between epochs, but none repeats within one.
  opt.drop_last = true;
  Loader dropping(ds, opt);
  std::set<int64_t> e0, e1;
  for (int k = 0; k < 12; ++k) {
    const Batch b = dropping.next();
    for (int64_t i = 0; i < 8; ++i) (k < 6 ? e0 : e1).insert(b.y[i].item<int64_t>());
  }
  EXPECT_EQ(e0.size(), 48u);
  EXPECT_EQ(e1.size(), 48u);
  EXPECT_NE(e0, e1);
}

TEST(Loader, PaddingUsesMinusOne) {
  const auto ds = indexed_dataset(20, {1, 28, 28});
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.seed = 3;
  Loader plain(ds, opt);
  opt.pad_to = 32;
  Loader padded(ds, opt);
  const Batch p = plain.next(), q = padded.next();
  ASSERT_EQ(q.x.sizes(), (std::vector<int64_t>{4, 1, 32, 32}));
  EXPECT_TRUE(torch::equal(q.x.narrow(2, 2, 28).narrow(3, 2, 28), p.x));
  auto border = torch::ones({32, 32}, torch::kBool);
  border.narrow(0, 2, 28).narrow(1, 2, 28).fill_(false);
  EXPECT_TRUE((q.x.masked_select(border.view({1, 1, 32, 32})) == -1.0f).all().item<bool>());
}

TEST(Loader, FlipsAboutHalfAndDeterministically) {
  const int64_t n = 400;
  const auto ds = indexed_dataset(n, {2, 3, 6}, 41);
  LoaderOptions opt;
  opt.batch_size = 50;
  opt.seed = 11;
  opt.random_flip = true;
  Loader a(ds, opt), b(ds, opt);
  int flipped = 0;
  for (int k = 0; k < 8; ++k) {
    const Batch x = a.next(), y = b.next();
    EXPECT_TRUE(torch::equal(x.x, y.x));
    const auto orig = scaled(ds.images.index_select(0, x.y));
    for (int64_t i = 0; i < 50; ++i) {
      const bool same = torch::equal(x.x[i], orig[i]);
      const bool mirrored = torch::equal(x.x[i], orig[i].flip({2}));
      EXPECT_NE(same, mirrored) << "image must be exactly the original or its mirror";
      flipped += mirrored;
      EXPECT_EQ(mirrored, Loader::flipped(11, 0, 50 * k + i));
    }
  }
  EXPECT_GT(flipped, n * 4 / 10);
  EXPECT_LT(flipped, n * 6 / 10);
}

TEST(Loader, SameSeedSameStreamDifferentSeedDifferentOrder) {
  const auto ds = indexed_dataset(64);
  LoaderOptions opt;
  opt.batch_size = 16;
  opt.seed = 1;
  opt.random_flip = true;
  Loader a(ds, opt), b(ds, opt);
  opt.seed = 2;
  Loader c(ds, opt);
  const auto sa = take(a, 6), sb = take(b, 6), sc = take(c, 6);
  expect_same(sa, sb);
  EXPECT_FALSE(torch::equal(sa[0].y, sc[0].y));
  // Consecutive epochs are shuffled differently too.
  EXPECT_FALSE(torch::equal(sa[0].y, sa[4].y));
}

TEST(Loader, ResumeIsBitIdentical) {
  const auto ds = indexed_dataset(37, {3, 4, 4}, 42);
  LoaderOptions opt;
  opt.batch_size = 5;  // 7 batches per epoch: the 13 batches below cross two epoch boundaries
  opt.seed = 77;
  opt.random_flip = true;
  opt.pad_to = 6;
  opt.prefetch = 4;
  const int k = 5;
  Loader full(ds, opt);
  take(full, k);
  const LoaderState s = full.state();
  EXPECT_EQ(s, (LoaderState{0, 25}));
  const auto rest = take(full, 13);

  Loader resumed(ds, opt, s);
  EXPECT_EQ(resumed.state(), s);
  expect_same(take(resumed, 13), rest);

  // reset() discards whatever was prefetched.
  Loader other(ds, opt);
  take(other, 9);
  other.reset(s);
  EXPECT_EQ(other.state(), s);
  expect_same(take(other, 13), rest);
}

// Data parallelism: the shards of a global batch, concatenated in rank order, are exactly the
// global batch (flips included), and every shard's loader keeps the global state.
TEST(Loader, ShardsTileTheGlobalBatch) {
  const auto ds = indexed_dataset(37, {3, 4, 4}, 43);
  LoaderOptions opt;
  opt.batch_size = 6;
  opt.seed = 5;
  opt.random_flip = true;
  Loader whole(ds, opt, LoaderState{1, 12});
  const auto global = take(whole, 8);  // crosses an epoch boundary
  for (int64_t shards : {2, 3}) {
    std::vector<std::vector<Batch>> parts;
    for (int64_t r = 0; r < shards; ++r) {
      auto o = opt;
      o.shard = r;
      o.num_shards = shards;
      Loader l(ds, o, LoaderState{1, 12});
      parts.push_back(take(l, 8));
      EXPECT_EQ(l.state(), whole.state()) << "shard " << r << " of " << shards;
    }
    for (size_t i = 0; i < global.size(); ++i) {
      std::vector<torch::Tensor> xs, ys;
      for (const auto& p : parts) {
        EXPECT_EQ(p[i].x.size(0), 6 / shards);
        xs.push_back(p[i].x);
        ys.push_back(p[i].y);
      }
      EXPECT_TRUE(torch::equal(torch::cat(xs), global[i].x)) << shards << " shards, batch " << i;
      EXPECT_TRUE(torch::equal(torch::cat(ys), global[i].y)) << shards << " shards, batch " << i;
    }
  }
  auto o = opt;
  o.shard = 2;
  o.num_shards = 2;
  expect_error([&] { Loader l(ds, o); }, {"shard 2 of 2"});
}

TEST(Loader, StateCountsOnlyHandedOutBatches) {
  const auto ds = indexed_dataset(40);
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.prefetch = 4;
  Loader loader(ds, opt, LoaderState{3, 8});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the worker fill the queue
  EXPECT_EQ(loader.state(), (LoaderState{3, 8}));
  loader.next();
  EXPECT_EQ(loader.state(), (LoaderState{3, 12}));
  // A state past the last full batch starts the next epoch.
  Loader edge(ds, opt, LoaderState{2, 38});
  EXPECT_EQ(edge.state(), (LoaderState{3, 0}));
}

TEST(Loader, InvalidOptionsAreErrors) {
  const auto ds = indexed_dataset(10, {1, 28, 28});
  LoaderOptions opt;
  opt.batch_size = 0;
  expect_error([&] { Loader l(ds, opt); }, {"batch-size"});
  opt.batch_size = 11;
  expect_error([&] { Loader l(ds, opt); }, {"batch-size 11", "10 images"});
  opt.batch_size = 2;
  opt.pad_to = 20;
  expect_error([&] { Loader l(ds, opt); }, {"pad-to 20"});
  opt.pad_to = 0;
  expect_error([&] { Loader l(ds, opt, LoaderState{0, 11}); }, {"resume state"});
  Dataset empty;
  expect_error([&] { Loader l(empty, opt); }, {"uint8"});
}
