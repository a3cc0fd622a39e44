// diffuse eval nll | train-classifier | fd: the likelihood bound on held-out data, and sample
// quality as FD-FMNIST / IS-FMNIST over a Fashion-MNIST classifier's features.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "diffuse/core/device.h"
#include "diffuse/core/error.h"
#include "diffuse/core/filesystem.h"
#include "diffuse/eval/classifier.h"
#include "diffuse/eval/nll.h"
#include "diffuse/eval/sample_quality.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/npy.h"
#include "diffuse/pipeline/generate.h"
#include "diffuse/pipeline/load_model.h"
#include "diffuse/pipeline/model_fn.h"

namespace fs = std::filesystem;

namespace diffuse::cli {

namespace {

// --out, else RUN/eval when the model is a run folder or one of its checkpoints, else ".".
std::string out_dir_for(const Args& a, const std::string& model_spec) {
  if (a.has("out")) return a.str("out");
  if (!model_spec.empty()) {
    fs::path p = fs::path(model_spec).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    if (fs::is_directory(p / "checkpoints") && fs::exists(p / "config.json"))
      return (p / "eval").string();
    const auto run = p.parent_path().parent_path();
    if (p.parent_path().filename() == "checkpoints" && fs::exists(run / "config.json"))
      return (run / "eval").string();
  }
  return ".";
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// ---- eval nll ------------------------------------------------------------------------------

int run_nll(const Args& a) {
  const auto device = setup_device(a);
  const auto spec = a.str("model");
  auto lm = load_model(spec, device, !a.flag("no-ema"));
  const auto& cfg = lm.model->config();
  const auto out = out_dir_for(a, spec);
  // nll.json, nll_terms.csv (one line per timestep) and the plot: well under a MiB.
  check_writable_folder(out, 1 << 20, a.has("out") ? "--out" : "the output folder");
  int64_t pad = 0;
  auto images =
      load_eval_images(a.str("data"), a.str("split"), cfg.sample_size, cfg.in_channels, &pad);
  const int64_t n = a.integer("n");
  check(n >= 0, "--n must be >= 0 (0: the whole split), got ", n);
  if (n > 0) {
    check(n <= images.size(0), "--n ", n, " is more than the ", images.size(0), " images of ",
          a.str("data"), " ", a.str("split"));
    images = images.slice(0, 0, n);
  }
  NllOptions o;
  o.batch = a.integer("batch");
  o.device = device;
  o.bpd.terms = a.integer("terms");
  o.bpd.clip_x0 = a.flag("clip-x0");
  o.bpd.seed = static_cast<uint64_t>(a.integer("seed"));
  o.bpd.progress = true;
  const auto diffusion = lm.process.make_diffusion();
  std::cerr << "diffuse: NLL of " << lm.description << " on " << images.size(0) << " "
            << a.str("split") << " images of " << a.str("data")
            << (pad > 0 ? " (padded by " + std::to_string(pad) + " px as in training)" : "")
            << ", bound in float64\n";
  auto r = evaluate_nll(diffusion, unet_model_fn(lm.model, autocast_bf16(precision_of(a, device))),
                        images, pad, o);
  std::cout << nll_summary_line(r) << "\n";
  if (r.estimate)
    std::cout << "(an estimate: " << r.timesteps.size() << " of " << r.num_timesteps
              << " terms evaluated, each weighted by the timesteps it stands for; --terms 0 "
                 "evaluates all)\n";
  if (pad > 0)
    std::cout << "(bits per dimension of the " << images.size(2) << "x" << images.size(3)
              << " data; per dimension of the padded model input it is "
              << fixed(r.nll / r.dims_ratio, 3) << ")\n";
  nlohmann::json meta = {
      {"model", lm.description}, {"step", lm.step},          {"data", a.str("data")},
      {"split", a.str("split")}, {"clip_x0", o.bpd.clip_x0}, {"seed", o.bpd.seed},
      {"batch", o.batch},        {"ema", !a.flag("no-ema")}, {"pad", pad}};
  write_nll_outputs(out, r, meta);
  std::cerr << "diffuse: wrote " << out << "/nll.json, nll_terms.csv, nll_terms.png\n";
  return 0;
}

// ---- eval train-classifier -----------------------------------------------------------------

TrainedClassifier train_and_save(const std::string& dir, const ClassifierTrainOptions& o) {
  auto t = train_classifier(o);
  nlohmann::json info = {{"data", o.data}, {"epochs", o.epochs}, {"batch", o.batch},
                         {"lr", o.lr},     {"seed", o.seed},     {"seconds", t.seconds}};
  save_classifier(dir, t.model, t.test_accuracy, info);
  // Statistics cached for an older classifier would not match its fingerprint; remove them.
  std::remove(reference_stats_path(dir).c_str());
  return t;
}

int run_train_classifier(const Args& a) {
  ClassifierTrainOptions o;
  o.device = setup_device(a);
  o.data = a.str("data");
  o.epochs = a.integer("epochs");
  o.batch = a.integer("batch");
  o.lr = a.number("lr");
  o.seed = static_cast<uint64_t>(a.integer("seed"));
  const auto dir = a.has("out") ? a.str("out") : default_classifier_dir();
  check_writable_folder(dir, 16 << 20, a.has("out") ? "--out" : "the classifier folder");
  std::cerr << "diffuse: training the FD-FMNIST classifier on " << o.data << " for " << o.epochs
            << " epochs into " << dir << "\n";
  auto t = train_and_save(dir, o);
  std::cout << "classifier test accuracy: " << fixed(100 * t.test_accuracy, 2) << "% ("
            << fixed(t.seconds, 0) << " s of training); saved to " << dir << "\n";
  if (t.test_accuracy < 0.9)
    std::cout << "warning: below 90%; its features make FD-FMNIST less meaningful (try more "
                 "--epochs)\n";
  return 0;
}

// ---- eval fd -------------------------------------------------------------------------------

// The classifier in `dir`, trained there first when there is none.
FmnistClassifier ready_classifier(const std::string& dir, const std::string& data,
                                  const torch::Device& device) {
  if (!classifier_exists(dir)) {
    std::cerr << "diffuse: no classifier in " << dir
              << "; training one now (diffuse eval train-classifier does this alone)\n";
    ClassifierTrainOptions o;
    o.device = device;
    o.data = data;
    auto t = train_and_save(dir, o);
    std::cerr << "diffuse: classifier test accuracy " << fixed(100 * t.test_accuracy, 2) << "%\n";
  }
  return load_classifier(dir, device);
}

// The cached statistics of `data` under this classifier, computed and cached when they are not.
ReferenceStats reference_stats(FmnistClassifier& classifier, const std::string& classifier_dir,
                               const std::string& data) {
  const auto fingerprint = classifier_fingerprint(classifier_dir);
  const auto cache = reference_stats_path(classifier_dir);
  auto ref = load_reference_stats(cache, fingerprint, data);
  if (ref) return *ref;
  std::cerr << "diffuse: computing reference statistics of " << data << " (cached in " << cache
            << ")\n";
  ref = compute_reference_stats(classifier, data);
  ref->fingerprint = fingerprint;
  try {
    save_reference_stats(cache, *ref);
  } catch (const Error& e) {
    std::cerr << "diffuse: warning: could not cache the statistics: " << e.what() << "\n";
  }
  return *ref;
}

// The images to score, in the data's size, and where their scores go.
struct Samples {
  torch::Tensor images, labels;  // labels: the classes sampled for, when class-conditional
  std::string spec;              // --model, or empty
  // One file per sampler setting, so a run's eval folder collects a comparison of samplers.
  std::string name = "fd_samples.json";
};

Samples samples_from_file(const Args& a, int64_t data_size, nlohmann::json& meta) {
  Samples out;
  out.images = load_sample_images(a.str("samples"), data_size);
  meta["samples"] = a.str("samples");
  return out;
}

GenerateOptions fd_generate_options(const Args& a, const torch::Device& device, int64_t classes) {
  GenerateOptions g;
  g.n = a.integer("n");
  g.batch = a.integer("batch");
  g.seed = static_cast<uint64_t>(a.integer("seed"));
  g.bf16 = autocast_bf16(precision_of(a, device));
  g.guidance = a.number("guidance");
  if (a.has("class") || classes > 0)
    g.class_labels =
        cycle_labels(parse_class_list(a.has("class") ? a.str("class") : "all", classes), g.n);
  check(g.n >= 2, "--n must be >= 2, got ", g.n);
  check(g.batch >= 1, "--batch must be >= 1, got ", g.batch);
  return g;
}

// fd_SAMPLER-STEPS[-clip][-classC-gG].json
std::string fd_file_name(const Args& a, const SamplerOptions& so, bool class_conditional) {
  auto name = "fd_" + so.kind + "-" + std::to_string(so.steps) + (so.clip_x0 ? "-clip" : "");
  if (class_conditional)
    name += "-class" + (a.has("class") ? a.str("class") : "all") + "-g" + a.str("guidance");
  return name + ".json";
}

void describe_sampling(nlohmann::json& meta, const Args& a, const LoadedModel& lm,
                       const SamplerOptions& so, const GenerateOptions& g) {
  meta["model"] = lm.description;
  meta["step"] = lm.step;
  meta["sampler"] = so.kind;
  meta["steps"] = so.steps;
  meta["eta"] = so.eta;
  meta["clip_x0"] = so.clip_x0;
  if (g.class_labels.defined()) {
    meta["class"] = a.has("class") ? a.str("class") : "all";
    meta["guidance"] = g.guidance;
  }
  meta["seed"] = g.seed;
  meta["ema"] = !a.flag("no-ema");
}

Samples samples_from_model(const Args& a, const torch::Device& device, int64_t data_size,
                           nlohmann::json& meta) {
  Samples out;
  out.spec = a.str("model");
  auto lm = load_model(out.spec, device, !a.flag("no-ema"));
  const auto so = sampler_options(lm.process, a.str("sampler"), a.integer("steps"), a.number("eta"),
                                  "", a.flag("clip-x0"));
  const auto g = fd_generate_options(a, device, num_classes(lm.model->config()));
  out.labels = g.class_labels;
  std::cerr << "diffuse: sampling " << g.n << " images from " << lm.description << " (" << so.kind
            << ", " << so.steps << " steps)\n";
  auto samples = generate(lm.model, lm.process, so, g, device);
  if (a.has("save-samples")) {
    save_npy(a.str("save-samples"), samples);
    std::cerr << "diffuse: wrote the samples to " << a.str("save-samples") << "\n";
  }
  out.images = samples_to_data_images(samples, data_size);
  describe_sampling(meta, a, lm, so, g);
  out.name = fd_file_name(a, so, out.labels.defined());
  return out;
}

void print_scores(const SampleScores& s, const ReferenceStats& ref) {
  std::cout << "FD-FMNIST: " << fixed(s.fd, 3) << "   IS-FMNIST: " << fixed(s.is.mean, 3) << " +- "
            << fixed(s.is.std, 3) << "   (" << s.n << " images)\n"
            << "reference points (same classifier, " << ref.n_test << " images each):\n"
            << "  train vs test (the floor):          FD-FMNIST " << fixed(ref.fd_train_test, 3)
            << "   IS-FMNIST " << fixed(ref.is_train.mean, 3) << " (test set "
            << fixed(ref.is_test.mean, 3) << ")\n"
            << "  test blurred (sigma " << fixed(ref.blur_sigma, 1) << " px) vs test:  FD-FMNIST "
            << fixed(ref.fd_blur_test, 3) << "   IS-FMNIST " << fixed(ref.is_blur.mean, 3) << "\n"
            << "(FD-FMNIST is not FID: it uses this classifier's features, not Inception's";
  if (s.n != ref.n_test) std::cout << "; it is biased upward at small N, so compare at equal N";
  std::cout << ")\n";
}

// How often the classifier sees the class that was asked for (chance: 1 / classes).
double class_accuracy(FmnistClassifier& classifier, const Samples& samples) {
  auto predicted = classify(classifier, samples.images).probs.argmax(1);
  const double accuracy = predicted.eq(samples.labels).to(torch::kFloat64).mean().item<double>();
  std::cout << "class accuracy: " << fixed(100 * accuracy, 2)
            << "% of the samples are classified as the class they were sampled for\n";
  return accuracy;
}

void record_scores(nlohmann::json& meta, const SampleScores& s, const ReferenceStats& ref) {
  meta["fd_fmnist"] = s.fd;
  meta["is_fmnist"] = s.is.mean;
  meta["is_fmnist_std"] = s.is.std;
  meta["n"] = s.n;
  meta["reference"] = {{"fd_fmnist_train_vs_test", ref.fd_train_test},
                       {"fd_fmnist_blur_vs_test", ref.fd_blur_test},
                       {"is_fmnist_train", ref.is_train.mean},
                       {"is_fmnist_test", ref.is_test.mean},
                       {"is_fmnist_blur", ref.is_blur.mean},
                       {"blur_sigma", ref.blur_sigma},
                       {"n", ref.n_test}};
}

// Where eval fd writes, checked before the classifier, the statistics and the sampling: the
// scores' folder, --save-samples (the 28x28 or model-sized floats) and a classifier to be trained.
void check_fd_outputs(const Args& a, const std::string& classifier_dir) {
  const auto out = out_dir_for(a, a.has("model") ? a.str("model") : "");
  check_writable_folder(out, 1 << 16, a.has("out") ? "--out" : "the output folder");
  if (a.has("save-samples")) {
    const auto n = static_cast<uint64_t>(std::max<int64_t>(a.integer("n"), 0));
    // The model's size is not known before it loads; 3x32x32 float32 bounds the presets.
    check_writable_output(a.str("save-samples"), n * 3 * 32 * 32 * 4 + 128, "--save-samples");
  }
  if (!classifier_exists(classifier_dir))
    check_writable_folder(classifier_dir, 16 << 20,
                          a.has("classifier") ? "--classifier" : "the classifier folder");
}

int run_fd(const Args& a) {
  const auto device = setup_device(a);
  check(a.has("model") != a.has("samples"), "give exactly one of --model and --samples");
  check(!a.has("class") || a.has("model"),
        "--class needs --model (an .npy of samples has no labels)");
  const auto data = a.str("data");
  const auto classifier_dir = a.has("classifier") ? a.str("classifier") : default_classifier_dir();
  check_fd_outputs(a, classifier_dir);
  auto classifier = ready_classifier(classifier_dir, data, device);
  const auto ref = reference_stats(classifier, classifier_dir, data);

  nlohmann::json meta = {{"metric", "fd-fmnist"}, {"data", data}, {"classifier", classifier_dir}};
  const auto samples = a.has("samples") ? samples_from_file(a, ref.image_size, meta)
                                        : samples_from_model(a, device, ref.image_size, meta);
  check(samples.images.size(1) == classifier->config().in_channels, "samples have ",
        samples.images.size(1), " channels, the classifier takes ",
        classifier->config().in_channels);
  auto s = score_images(classifier, samples.images, ref.test, a.integer("is-splits"));
  print_scores(s, ref);
  if (samples.labels.defined()) meta["class_accuracy"] = class_accuracy(classifier, samples);

  record_scores(meta, s, ref);
  const auto out = out_dir_for(a, samples.spec);
  write_file_atomic((fs::path(out) / samples.name).string(), meta.dump(2) + "\n");
  std::cerr << "diffuse: wrote " << out << "/" << samples.name << "\n";
  return 0;
}

}  // namespace

Command eval_nll_command() {
  Command c;
  c.name = "eval nll";
  c.summary = "negative log-likelihood bound (bits/dim) on held-out data";
  c.usage = "diffuse eval nll --model RUN|CHECKPOINT|DIR [--n N] [--terms K] [options]";
  c.description =
      "Evaluates the variational bound L_T + sum_t L_{t-1} + L_0 (Ho et al. eq. 5) on the first N\n"
      "images of the split, in bits per data dimension (28x28 images padded for a 32x32 model are\n"
      "still counted per 28x28 pixel), with the standard error over images. --terms K < T "
      "evaluates\n"
      "K timesteps and weights each by the timesteps it stands for: an estimate. Writes nll.json,\n"
      "nll_terms.csv and nll_terms.png (mean L_t against t) into --out (default: RUN/eval for a "
      "run\n"
      "folder, else the current folder). The network runs in float32, the bound in float64.";
  c.options = {
      {"model", "", "run folder, checkpoint folder or diffusers UNet2DModel folder", false, true},
      {"data", "fashion-mnist", "dataset spec (as for diffuse train)"},
      {"split", "test", "train | test"},
      {"n", "1000", "images to evaluate (0: the whole split)"},
      {"batch", "100", "images per batch"},
      {"terms", "0", "timesteps evaluated (0: all T, the exact bound)"},
      clip_x0_option(),
      {"seed", "0", "seed of the forward-process noise"},
      no_ema_option(),
      {"out", "", "folder for nll.json, nll_terms.csv, nll_terms.png"},
  };
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_nll;
  return c;
}

Command eval_train_classifier_command() {
  const ClassifierTrainOptions d;
  Command c;
  c.name = "eval train-classifier";
  c.summary = "train the Fashion-MNIST classifier behind FD-FMNIST and IS-FMNIST";
  c.usage = "diffuse eval train-classifier [--epochs E] [--out DIR]";
  c.description =
      "A small CNN (three conv/GroupNorm/ReLU/max-pool stages of 32, 64, 128 channels, a 256-wide\n"
      "feature layer, 10 logits) trained with AdamW on the training split, 28x28 padded to 32x32\n"
      "in [-1, 1]. Reports test accuracy; saves classifier.safetensors + classifier.json into "
      "--out\n"
      "(default " +
      default_classifier_dir() + ").";
  c.options = {
      {"out", "", "folder to save the classifier in (default: the cache folder above)"},
      {"data", d.data, "labelled dataset spec"},
      {"epochs", std::to_string(d.epochs), "passes over the training split"},
      {"batch", std::to_string(d.batch), "batch size"},
      {"lr", "0.002", "peak AdamW learning rate (warmup, then cosine decay)"},
      {"seed", "0", "seed for the weights and the data order"},
  };
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_train_classifier;
  return c;
}

Command eval_fd_command() {
  Command c;
  c.name = "eval fd";
  c.summary = "sample quality: FD-FMNIST and IS-FMNIST beside reference points";
  c.usage =
      "diffuse eval fd --model RUN [--n 10000] [--sampler ddim --steps 50]  |  "
      "diffuse eval fd --samples FILE.npy";
  c.description =
      "The Frechet distance between Gaussians fitted to classifier features of the samples and of\n"
      "the test split (FD-FMNIST), and the Inception score over the classifier's softmax\n"
      "(IS-FMNIST). These are NOT FID / IS: the classifier is a small Fashion-MNIST CNN, so "
      "values\n"
      "compare only with each other. Printed beside the train-vs-test floor and a blurred-test\n"
      "poor-model point, cached next to the classifier. Samples come from --model (32x32 samples\n"
      "are cropped to 28x28) or --samples: an .npy of (N, 1, 28|32, 28|32), float in [-1, 1] or\n"
      "uint8. With no classifier in --classifier, one is trained first (a few minutes on a CPU).";
  c.options = {
      {"model", "", "run folder, checkpoint folder or diffusers UNet2DModel folder to sample"},
      {"samples", "", ".npy file of samples instead of --model"},
      {"n", "10000", "samples to generate"},
      {"sampler", "ddim", sampler_names()},
      {"steps", "50", "sampler steps"},
      {"eta", "0", "DDIM eta (0: deterministic)"},
      clip_x0_option(),
      {"seed", "0", "seed of the sampler noise"},
      {"batch", "250", "samples per batch"},
      no_ema_option(),
      {"save-samples", "", "also write the generated samples to this .npy file"},
      {"class", "",
       "class-conditional models: sample class K, a list K1,K2,... or all (the default), image i "
       "of the i mod m-th listed class; reports how often the classifier agrees"},
      {"guidance", "1", "classifier-free guidance scale (as for diffuse sample)"},
      {"classifier", "", "classifier folder (default " + default_classifier_dir() + ")"},
      {"data", "fashion-mnist", "reference dataset (its test split)"},
      {"is-splits", "10", "IS-FMNIST is averaged over this many splits of the samples"},
      {"out", "",
       "folder for fd_SAMPLER-STEPS[-clip].json (fd_samples.json with --samples); default: "
       "RUN/eval for a run folder, else the current one"},
  };
  for (auto& o : device_options()) c.options.push_back(o);
  c.run = run_fd;
  return c;
}

}  // namespace diffuse::cli
