// The pipeline: the U-Net as a model function (labels, classifier-free guidance, the graphed
// forward) and generate(), whose images depend on (seed, image index) alone.
#include <gtest/gtest.h>

#include "diffuse/core/error.h"
#include "diffuse/cpu/unet_engine.h"
#include "diffuse/io/safetensors.h"
#include "diffuse/models/presets.h"
#include "diffuse/models/weights.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/pipeline/model_fn.h"
#include "support.h"

using namespace diffuse;

// Sampling through a given model function (the graphed forward on CUDA) gives what the model's
// own forward gives; on the CPU the graphed one falls back to the eager forward, bit for bit.
// The ATen engine on both sides: the graph's fallback is the module's forward.
TEST(Generate, GivenModelFnAndGraphFallbackMatchTheEagerForward) {
  struct AtenEngine {
    AtenEngine() { set_cpu_engine(CpuEngine::Aten); }
    ~AtenEngine() { set_cpu_engine(parse_cpu_engine("auto")); }
  } aten;
  torch::manual_seed(0);
  UNet2DModel model(preset_config("tiny-test"));
  ProcessConfig process;
  const auto so = sampler_options(process, "ddim", 4);
  GenerateOptions g;
  g.n = 3;
  g.batch = 2;  // a full batch and a short one
  g.seed = 7;
  g.progress = false;
  const auto cpu = torch::Device(torch::kCPU);
  const auto eager = generate(model, process, so, g, cpu);
  ASSERT_EQ(eager.sizes(), (std::vector<int64_t>{3, 1, 16, 16}));
  int calls = 0;
  const auto graphed = graphed_unet_model_fn(model, {2, 1, 16, 16}, /*bf16=*/true);
  g.model_fn = [&](const torch::Tensor& x, const torch::Tensor& t) {
    ++calls;
    return graphed(x, t);
  };
  EXPECT_TRUE(torch::equal(generate(model, process, so, g, cpu), eager));
  EXPECT_EQ(calls, 8);  // 4 steps for each of the two batches
}

// Classifier-free guidance as a model function: scale 0 is the model with the null class and scale
// 1 the model with the label, exactly; any other scale is eps_null + s (eps_class - eps_null) from
// one doubled batch; a learned variance comes from the conditional output.
TEST(Guidance, ScalesZeroAndOneAreTheNullAndConditionalModels) {
  auto cfg = preset_config("tiny-test");
  cfg.num_class_embeds = 4;  // 3 classes and the null class
  torch::manual_seed(6);
  UNet2DModel model(cfg);
  model->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({3, 1, 16, 16});
  auto labels = torch::tensor({0L, 2L, 1L});
  const int64_t t = 400;
  auto tt = torch::full({3}, t, torch::kLong);
  // The CPU forward the model functions make (the oneDNN engine where built), bit for bit.
  auto with_null = cpu_unet_forward(model, x, tt, torch::full({3}, 3, torch::kLong));
  auto with_label = cpu_unet_forward(model, x, tt, labels);
  EXPECT_TRUE(torch::equal(guided_unet_model_fn(model, labels, 0.0, false)(x, tt), with_null));
  EXPECT_TRUE(torch::equal(guided_unet_model_fn(model, labels, 1.0, false)(x, tt), with_label));
  auto guided = guided_unet_model_fn(model, labels, 2.5, false)(x, tt);
  EXPECT_TRUE(torch::allclose(guided, with_null + 2.5 * (with_label - with_null), 1e-5, 1e-5));
  EXPECT_FALSE(torch::allclose(guided, with_label, 1e-3, 1e-3));

  auto lr_cfg = with_learned_variance(cfg);
  UNet2DModel lr(lr_cfg);
  lr->eval();
  auto lr_out = guided_unet_model_fn(lr, labels, 3.0, false)(x, tt);
  auto lr_label = lr->forward(x, tt, labels),
       lr_null = lr->forward(x, tt, torch::full({3}, 3, torch::kLong));
  EXPECT_TRUE(torch::allclose(lr_out.narrow(1, 1, 1), lr_label.narrow(1, 1, 1), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(
      lr_out.narrow(1, 0, 1),
      lr_null.narrow(1, 0, 1) + 3.0 * (lr_label.narrow(1, 0, 1) - lr_null.narrow(1, 0, 1)), 1e-5,
      1e-5));
}

TEST(Guidance, ClassListsAndErrors) {
  EXPECT_EQ(parse_class_list("all", 3), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(parse_class_list("2,0", 3), (std::vector<int64_t>{2, 0}));
  EXPECT_TRUE(torch::equal(cycle_labels({2, 0}, 5), torch::tensor({2L, 0L, 2L, 0L, 2L})));
  diffuse::testing::expect_error([] { parse_class_list("3", 3); }, {"--class 3", "3 classes"});
  diffuse::testing::expect_error([] { parse_class_list("1,x", 3); }, {"--class", "'x'"});
  diffuse::testing::expect_error([] { parse_class_list("0", 0); },
                                 {"--class", "not class-conditional"});

  // generate: labels on an unconditional model are refused; a conditional model without labels
  // samples every class in turn, which is what labels 0, 1, 2, 0 give.
  torch::manual_seed(7);
  UNet2DModel plain(preset_config("tiny-test"));
  ProcessConfig process;
  const auto so = sampler_options(process, "ddim", 3);
  GenerateOptions g;
  g.n = 4;
  g.progress = false;
  g.class_labels = torch::tensor({0L, 1L, 0L, 1L});
  diffuse::testing::expect_error([&] { generate(plain, process, so, g, torch::kCPU); },
                                 {"--class", "not class-conditional"});
  auto cfg = preset_config("tiny-test");
  cfg.num_class_embeds = 4;
  UNet2DModel cond(cfg);
  g.class_labels = torch::tensor({0L, 1L, 2L, 0L});
  g.guidance = 2.0;
  auto given = generate(cond, process, so, g, torch::kCPU);
  g.class_labels = torch::Tensor();
  EXPECT_TRUE(torch::equal(generate(cond, process, so, g, torch::kCPU), given));
  g.class_labels = torch::tensor({1L, 1L, 1L, 1L});
  EXPECT_FALSE(torch::equal(generate(cond, process, so, g, torch::kCPU), given));
}

// Per-image seeds (EDM's StackedRandomGenerator): for every sampler, ancestral ones included, the
// images of one seed are the same whatever --batch splits them into, and image i of n is image i
// of any other n > i. Batch sizes may change the convolutions' summation order, which a random
// network amplifies over the steps (measured 2e-5 to 2e-4 absolute at 4 steps), hence a
// tolerance relative to the largest value: 1e-5, where other noise would differ by O(1).
TEST(Generate, TheBatchSizeNeverChangesAnImage) {
  torch::manual_seed(3);
  UNet2DModel model(preset_config("tiny-test"));
  ProcessConfig process;
  GenerateOptions g;
  g.seed = 11;
  g.progress = false;
  for (const auto& k : sampler_kinds()) {
    auto so = sampler_options(process, k.name, 4);
    if (k.name == "ddim") so.eta = 1.0;
    g.n = 5;
    g.batch = 5;
    const auto whole = generate(model, process, so, g, torch::kCPU);
    g.batch = 2;
    const auto split = generate(model, process, so, g, torch::kCPU);
    g.n = g.batch = 3;
    const auto first3 = generate(model, process, so, g, torch::kCPU);
    const double scale = whole.abs().max().item<double>();
    EXPECT_LT((whole - split).abs().max().item<double>(), 1e-5 * scale) << k.name;
    EXPECT_LT((whole.narrow(0, 0, 3) - first3).abs().max().item<double>(), 1e-5 * scale) << k.name;
    EXPECT_GT((whole[0] - whole[1]).abs().max().item<double>(), 1e-2) << k.name;
    g.seed = 12;
    g.n = g.batch = 5;
    EXPECT_GT((generate(model, process, so, g, torch::kCPU) - whole).abs().max().item<double>(),
              1e-2)
        << k.name;
    g.seed = 11;
  }
}

TEST(Generate, NewSamplersMatchDiffusersOnTheGoldenUNet) {
  // dpm++3m, unipc and deis at 10 steps on the random U-Net of unet_tiny.safetensors in float64,
  // against diffusers' schedulers on the same network (tests/data/make_samplers.py --unet).
  const auto ref = diffuse::testing::load_json("samplers_unet.json");
  const auto cfg = diffuse::testing::load_json("unet_tiny.json").at("config");
  UNet2DModel model(UNetConfig::from_json(cfg, "unet_tiny.json"));
  const std::string w = std::string(DIFFUSE_TEST_DATA) + "/unet_tiny.safetensors";
  load_state_dict(*model, load_safetensors(w).tensors, w);
  model->to(torch::kFloat64);
  model->eval();
  const auto shape = ref.at("shape").get<std::vector<int64_t>>();
  const auto x_T =
      torch::tensor(ref.at("x_T").get<std::vector<double>>(), torch::kFloat64).reshape(shape);
  ModelFn fn = [&](const torch::Tensor& x, const torch::Tensor& t) { return model->forward(x, t); };
  for (const auto& run : ref.at("runs")) {
    const auto kind = run.at("sampler").get<std::string>();
    auto sampler =
        make_sampler(sampler_options(ProcessConfig{}, kind, run.at("steps").get<int64_t>()),
                     Schedule::linear(1000));
    EXPECT_EQ(sampler->timesteps(), run.at("timesteps").get<std::vector<int64_t>>()) << kind;
    NoiseSource noise(0);
    SampleCallbacks quiet;
    quiet.show_progress = false;
    const auto x0 = sampler->sample(fn, x_T, noise, quiet);
    const auto want =
        torch::tensor(run.at("x_0").get<std::vector<double>>(), torch::kFloat64).reshape(shape);
    const double scale = want.abs().max().item<double>();
    const double err = (x0 - want).abs().max().item<double>();
    std::cout << kind << ": max |x_0 - diffusers| = " << err << " (scale " << scale << ")\n";
    EXPECT_LT(err, 1e-5 * scale) << kind;
  }
}
