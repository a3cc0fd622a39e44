#include "diffuse/train/power_ema.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "diffuse/core/error.h"
#include "diffuse/io/checkpoint.h"
#include "diffuse/io/safetensors.h"

namespace fs = std::filesystem;

namespace diffuse {

double power_ema_beta(int64_t t, double gamma) {
  check(t >= 1, "power EMA: the update count starts at 1, got ", t);
  return std::pow(1.0 - 1.0 / static_cast<double>(t), gamma + 1.0);
}

double gamma_to_sigma_rel(double gamma) {
  check(gamma > -1, "power EMA: gamma must be > -1, got ", gamma);
  return std::sqrt(gamma + 1.0) / ((gamma + 2.0) * std::sqrt(gamma + 3.0));
}

double sigma_rel_to_gamma(double sigma_rel) {
  check(sigma_rel > 0 && sigma_rel <= 0.28, "power EMA: sigma_rel must be in (0, 0.28], got ",
        sigma_rel);
  const double s = 1.0 / (sigma_rel * sigma_rel);
  auto f = [&](double g) { return ((g + 7.0) * g + 16.0 - s) * g + 12.0 - s; };
  auto df = [&](double g) { return (3.0 * g + 14.0) * g + 16.0 - s; };
  // f is convex and increasing right of its largest root and positive at g = s, so Newton's method
  // from there descends monotonically onto that root.
  double g = s;
  for (int i = 0; i < 200; ++i) {
    const double step = f(g) / df(g);
    g -= step;
    if (std::abs(step) <= 1e-14 * std::max(1.0, std::abs(g))) break;
  }
  return g;
}

double power_ema_inner_product(const PowerEmaProfile& a, const PowerEmaProfile& b) {
  const double m = std::min(a.t, b.t), g = a.gamma + b.gamma + 1.0;
  return (a.gamma + 1.0) * (b.gamma + 1.0) / g *
         std::exp(g * std::log(m) - (a.gamma + 1.0) * std::log(a.t) -
                  (b.gamma + 1.0) * std::log(b.t));
}

std::vector<double> power_ema_coefficients(const std::vector<PowerEmaProfile>& snapshots,
                                           const PowerEmaProfile& target) {
  check(!snapshots.empty(), "power EMA: no snapshots to reconstruct from");
  const auto n = static_cast<int64_t>(snapshots.size());
  auto A = torch::empty({n, n}, torch::kFloat64);
  auto b = torch::empty({n, 1}, torch::kFloat64);
  for (int64_t i = 0; i < n; ++i) {
    check(snapshots[i].t > 0 && snapshots[i].gamma > -1, "power EMA: snapshot ", i,
          " has t <= 0 or gamma <= -1");
    b[i][0] = power_ema_inner_product(snapshots[i], target);
    for (int64_t j = 0; j < n; ++j) A[i][j] = power_ema_inner_product(snapshots[i], snapshots[j]);
  }
  // A is a Gram matrix, often near-singular (neighbouring snapshots overlap): the SVD-based
  // solver returns the minimum-norm solution, as EDM2's np.linalg.lstsq does.
  auto x = std::get<0>(at::linalg_lstsq(A, b, c10::nullopt, c10::string_view("gelsd")));
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i][0].item<double>();
  return out;
}

std::vector<double> parse_sigma_rels(const std::string& list) {
  std::vector<double> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used > 0 && used == item.size() && v > 0 && v <= 0.28, "--ema-power: '", item,
          "' is not a sigma_rel in (0, 0.28] (expected a list like 0.05,0.10)");
    out.push_back(v);
  }
  return out;
}

std::string power_ema_snapshot_path(const std::string& run_dir, int64_t step, size_t index) {
  return (fs::path(run_dir) / "ema_snapshots" /
          (checkpoint_dir_name(step) + "-" + std::to_string(index) + ".safetensors"))
      .string();
}

void save_power_ema_snapshot(const std::string& path, const std::map<std::string, torch::Tensor>& w,
                             const PowerEmaProfile& profile) {
  fs::create_directories(fs::path(path).parent_path());
  std::ostringstream t, g;
  t.precision(17);
  g.precision(17);
  t << profile.t;
  g << profile.gamma;
  save_safetensors(path, w, {{"t", t.str()}, {"gamma", g.str()}});
}

namespace {

PowerEmaProfile snapshot_profile(const SafetensorsFile& f, const std::string& path) {
  auto t = f.metadata.find("t"), g = f.metadata.find("gamma");
  check(t != f.metadata.end() && g != f.metadata.end(), path,
        ": not a power-EMA snapshot (no t and gamma in its metadata)");
  return {std::stod(t->second), std::stod(g->second)};
}

}  // namespace

PosthocEma posthoc_ema(const std::string& run_dir, double sigma_rel, int64_t t) {
  const auto dir = fs::path(run_dir) / "ema_snapshots";
  check(fs::is_directory(dir), run_dir, ": no ema_snapshots folder (train with --ema-power)");
  std::vector<std::string> paths;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
  std::sort(paths.begin(), paths.end());
  PosthocEma r;
  std::vector<std::string> used;
  double newest = 0;
  for (const auto& p : paths) {
    auto prof = snapshot_profile(load_safetensors(p), p);
    if (t > 0 && prof.t > static_cast<double>(t)) continue;
    r.snapshots.push_back(prof);
    used.push_back(p);
    newest = std::max(newest, prof.t);
  }
  check(!used.empty(), run_dir, ": no power-EMA snapshot at or before t = ", t);
  r.target = {t > 0 ? static_cast<double>(t) : newest, sigma_rel_to_gamma(sigma_rel)};
  r.x = power_ema_coefficients(r.snapshots, r.target);
  for (size_t i = 0; i < used.size(); ++i) {
    const auto f = load_safetensors(used[i]);
    for (const auto& [name, w] : f.tensors) {
      auto& acc = r.weights[name];
      if (!acc.defined()) acc = torch::zeros_like(w, torch::kFloat64);
      check(acc.sizes() == w.sizes(), used[i], ": '", name, "' has another shape than before");
      acc.add_(w.to(torch::kFloat64), r.x[i]);
    }
  }
  for (auto& [name, w] : r.weights) w = w.to(torch::kFloat32);
  return r;
}

}  // namespace diffuse
