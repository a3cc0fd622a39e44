#include "diffuse/eval/nll.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "diffuse/core/error.h"
#include "diffuse/core/progress.h"
#include "diffuse/data/dataset.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/report/plot.h"

namespace fs = std::filesystem;

namespace diffuse {

NllResult evaluate_nll(const GaussianDiffusion& diffusion, const ModelFn& model,
                       const torch::Tensor& images, int64_t pad, const NllOptions& options) {
  check(images.defined() && images.dim() == 4 && images.scalar_type() == torch::kUInt8,
        "NLL: images must be (N, C, H, W) uint8");
  check(images.size(0) >= 1, "NLL: no images to evaluate");
  check(pad >= 0, "NLL: padding must be >= 0, got ", pad);
  check(options.batch >= 1, "--batch must be >= 1, got ", options.batch);
  check(options.bpd.terms >= 0, "--terms must be >= 0, got ", options.bpd.terms);
  c10::InferenceMode inference;
  const int64_t n = images.size(0), h = images.size(2), w = images.size(3);
  const auto timesteps = bpd_timesteps(diffusion.num_timesteps(), options.bpd.terms);
  const auto k = static_cast<int64_t>(timesteps.size());
  const int64_t batches = (n + options.batch - 1) / options.batch;

  // One network call is one term of one batch: that is the unit of progress.
  ProgressBar bar(batches * k, "nll", "call", options.bpd.progress);
  ModelFn counted = [&](const torch::Tensor& x_t, const torch::Tensor& t) {
    auto out = model(x_t, t);
    bar.update(1);
    return out;
  };

  NllResult r;
  r.n = n;
  r.num_timesteps = diffusion.num_timesteps();
  r.dims_ratio = static_cast<double>((h + 2 * pad) * (w + 2 * pad)) / static_cast<double>(h * w);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(options.device);
  auto term_sum = torch::zeros({k}, f64), mse_sum = torch::zeros({k}, f64);
  auto prior_sum = torch::zeros({}, f64);
  std::vector<torch::Tensor> totals;
  for (int64_t b = 0; b < batches; ++b) {
    // x0: (B, C, h, w) uint8 -> (B, C, h + 2 pad, w + 2 pad) in [-1, 1], border -1 as in training.
    auto x0 = images.slice(0, b * options.batch, (b + 1) * options.batch).to(f64) / 127.5 - 1.0;
    if (pad > 0) x0 = torch::constant_pad_nd(x0, {pad, pad, pad, pad}, -1.0);
    BpdOptions bo = options.bpd;
    bo.seed = options.bpd.seed + static_cast<uint64_t>(b);
    bo.progress = false;
    auto res = calc_bpd_loop(diffusion, counted, x0, bo);
    totals.push_back(res.total_bpd.to(torch::kCPU, torch::kFloat64));
    term_sum += res.terms_bpd.sum(0);
    mse_sum += res.x0_mse.sum(0);
    prior_sum += res.prior_bpd.sum();
    r.timesteps = res.timesteps;
    r.weights = res.weights;
    r.estimate = res.estimate;
  }
  bar.finish();
  // Bits per model dimension -> bits per data dimension: the total over the image is the same.
  r.per_image = torch::cat(totals) * r.dims_ratio;
  r.nll = r.per_image.mean().item<double>();
  r.se = n > 1 ? r.per_image.std().item<double>() / std::sqrt(static_cast<double>(n)) : 0.0;
  auto to_vec = [&](const torch::Tensor& t) {
    auto c = (t.to(torch::kCPU) * (r.dims_ratio / n)).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  r.term_mean = to_vec(term_sum);
  r.x0_mse_mean = to_vec(mse_sum);
  r.prior_mean = prior_sum.item<double>() * r.dims_ratio / n;
  return r;
}

torch::Tensor load_eval_images(const std::string& spec, const std::string& split,
                               int64_t sample_size, int64_t channels, int64_t* pad_out) {
  check(sample_size >= 1, "model sample_size must be >= 1");
  const bool folder = spec.rfind("folder:", 0) == 0;
  auto ds = load_dataset(spec, split, folder ? sample_size : 0, channels);
  const int64_t diff = sample_size - ds.height();
  int64_t pad = 0;
  if (ds.height() == ds.width() && diff >= 0 && diff % 2 == 0) {
    pad = diff / 2;
  } else {
    // Larger than the model, or not centred by whole pixels: resize as training does then.
    ds = load_dataset(spec, split, sample_size, channels);
  }
  if (pad_out) *pad_out = pad;
  return ds.images;
}

std::string nll_summary_line(const NllResult& r) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "NLL: %.3f bits/dim +- %.3f  (%lld images, ", r.nll, r.se,
                static_cast<long long>(r.n));
  std::string s = buf;
  if (r.estimate)
    s += "an estimate from " + std::to_string(r.timesteps.size()) + " of " +
         std::to_string(r.num_timesteps) + " terms)";
  else
    s += "all " + std::to_string(r.num_timesteps) + " terms)";
  return s;
}

void write_nll_outputs(const std::string& out_dir, const NllResult& r, const nlohmann::json& meta) {
  fs::create_directories(out_dir);
  nlohmann::json j = meta.is_object() ? meta : nlohmann::json::object();
  j["metric"] = "nll";
  j["nll"] = r.nll;
  j["se"] = r.se;
  j["n"] = r.n;
  j["terms"] = static_cast<int64_t>(r.timesteps.size());
  j["num_timesteps"] = r.num_timesteps;
  j["estimate"] = r.estimate;
  j["prior_bpd"] = r.prior_mean;
  j["units"] = "bits per data dimension";
  j["dims_ratio"] = r.dims_ratio;
  write_file_atomic((fs::path(out_dir) / "nll.json").string(), j.dump(2) + "\n");

  std::ostringstream csv;
  csv << "t,weight,term_bits_per_dim,x0_mse\n";
  csv.precision(10);
  for (size_t i = 0; i < r.timesteps.size(); ++i)
    csv << r.timesteps[i] << "," << r.weights[i] << "," << r.term_mean[i] << "," << r.x0_mse_mean[i]
        << "\n";
  // The prior term L_T, at t = T, once.
  csv << r.num_timesteps << ",1," << r.prior_mean << ",\n";
  write_file_atomic((fs::path(out_dir) / "nll_terms.csv").string(), csv.str());

  Series s{"mean L_t", {}, {}};
  for (size_t i = 0; i < r.timesteps.size(); ++i) {
    s.x.push_back(static_cast<double>(r.timesteps[i]));
    s.y.push_back(r.term_mean[i]);
  }
  save_line_plot((fs::path(out_dir) / "nll_terms.png").string(), {s}, "NLL terms per timestep", "t",
                 "bits/dim", true);
}

}  // namespace diffuse
