#include "diffuse/report/report.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "diffuse/core/error.h"
#include "diffuse/io/atomic_file.h"
#include "diffuse/io/base64.h"
#include "diffuse/io/image.h"
#include "diffuse/report/plot.h"

namespace fs = std::filesystem;

namespace diffuse {

namespace {

std::string fmt(double v, int precision = 4) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

std::string json_scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return fmt(v.get<double>(), 6);
  if (v.is_array()) return "[" + std::to_string(v.size()) + " values]";
  return v.dump();
}

bool is_png(const std::string& bytes) {
  static const std::string sig = "\x89PNG\r\n\x1a\n";
  return bytes.compare(0, sig.size(), sig) == 0;
}

std::string img_tag(const std::string& png, const std::string& alt, const std::string& cls = "") {
  return "<img" + (cls.empty() ? std::string() : " class=\"" + cls + "\"") + " alt=\"" +
         html_escape(alt) + "\" src=\"data:image/png;base64," + base64_encode(png) + "\">";
}

// The step number in a name like step_00001000.png, or -1.
int64_t step_of(const std::string& stem) {
  if (stem.rfind("step_", 0) != 0 || stem.size() == 5) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < stem.size(); ++i) {
    if (stem[i] < '0' || stem[i] > '9' || v > (INT64_MAX - 9) / 10) return -1;
    v = v * 10 + (stem[i] - '0');
  }
  return v;
}

std::string plot_png(const std::vector<LogPoint>& log, double LogPoint::*field,
                     const std::string& label, const std::string& title, bool log_y) {
  Series s{label, {}, {}};
  for (const auto& p : log) {
    s.x.push_back(static_cast<double>(p.step));
    s.y.push_back(p.*field);
  }
  return encode_png(render_line_plot({s}, title, "step", label, log_y, 800, 400));
}

const char* kStyle = R"(
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .25em .7em; text-align: left; font-size: .92em; }
th { background: #f4f4f4; }
td.num { text-align: right; font-family: monospace; }
.plots img { max-width: 100%; border: 1px solid #eee; margin: .3em 0; }
.grids { display: flex; flex-wrap: wrap; gap: 1em; }
.grids figure { margin: 0; text-align: center; }
.grids img { image-rendering: pixelated; width: 260px; border: 1px solid #ccc; }
.note { color: #777; font-size: .9em; }
)";

// config.json as an object; null when there is none.
nlohmann::json read_config(const fs::path& path, std::vector<std::string>& warnings) {
  nlohmann::json config;
  if (fs::exists(path)) {
    config = nlohmann::json::parse(read_file(path.string()), nullptr, false);
    if (config.is_discarded() || !config.is_object()) {
      warnings.push_back(path.string() + ": not a JSON object; config not shown");
      config = nlohmann::json::object();
    }
  }
  return config;
}

// Evaluation results: every JSON object in eval/, by file name, and the PNG plots beside them.
struct EvalFolder {
  std::vector<std::pair<std::string, nlohmann::json>> results;
  std::vector<std::pair<std::string, std::string>> pngs;
};

EvalFolder read_eval_folder(const fs::path& dir, std::vector<std::string>& warnings) {
  EvalFolder out;
  if (!fs::is_directory(dir)) return out;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    if (f.extension() == ".json") {
      auto j = nlohmann::json::parse(read_file(f.string()), nullptr, false);
      if (j.is_discarded() || !j.is_object())
        warnings.push_back(f.string() + ": not a JSON object; skipped");
      else
        out.results.emplace_back(f.filename().string(), j);
    } else if (f.extension() == ".png") {
      auto bytes = read_file(f.string());
      if (is_png(bytes)) out.pngs.emplace_back(f.filename().string(), std::move(bytes));
    }
  }
  return out;
}

using Grids = std::vector<std::pair<int64_t, fs::path>>;

// Preview grids in step order.
Grids preview_grids(const fs::path& dir) {
  Grids grids;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".png") {
        const auto s = step_of(e.path().stem().string());
        if (s >= 0) grids.emplace_back(s, e.path());
      }
  std::sort(grids.begin(), grids.end());
  return grids;
}

// At most `max_grids` (0: all), evenly spaced from the first to the last (the last alone for 1).
Grids thin_evenly(Grids grids, int64_t max_grids) {
  const auto all = static_cast<int64_t>(grids.size());
  if (max_grids <= 0 || all <= max_grids) return grids;
  Grids kept;
  const int64_t m = max_grids;
  for (int64_t i = 0; i < m; ++i) kept.push_back(grids[m == 1 ? all - 1 : i * (all - 1) / (m - 1)]);
  return kept;
}

void write_head(std::ostream& h, const fs::path& run, const std::string& run_dir) {
  const auto name = fs::absolute(run).lexically_normal().filename().string();
  const auto title = "diffuse run: " + (name.empty() ? run_dir : name);
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>"
    << html_escape(title) << "</title>\n<style>" << kStyle << "</style>\n</head>\n<body>\n";
  h << "<h1>" << html_escape(title) << "</h1>\n";
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
  h << "<p class=\"note\">" << html_escape(fs::absolute(run).lexically_normal().string())
    << " &middot; report written " << when << "</p>\n";
}

void summary_row(std::ostream& h, const std::string& k, const std::string& v) {
  h << "<tr><th>" << html_escape(k) << "</th><td>" << html_escape(v) << "</td></tr>\n";
}

void summarize_log(std::ostream& h, const std::vector<LogPoint>& log) {
  const auto& last = log.back();
  summary_row(h, "last logged step", std::to_string(last.step));
  summary_row(h, "loss at last log", fmt(last.loss));
  double ips = 0;
  int64_t n = 0;
  for (const auto& p : log)
    if (std::isfinite(p.images_per_s)) ips += p.images_per_s, ++n;
  if (n > 0) summary_row(h, "mean images/s", fmt(ips / n));
  if (std::isfinite(last.wall_time)) summary_row(h, "training time (s)", fmt(last.wall_time, 6));
}

void summarize_eval(std::ostream& h, const std::string& file, const nlohmann::json& j) {
  if (j.contains("nll") && j["nll"].is_number())
    summary_row(
        h, "NLL (bits/dim), " + file,
        fmt(j["nll"].get<double>()) +
            (j.contains("se") && j["se"].is_number() ? " +- " + fmt(j["se"].get<double>(), 2)
                                                     : "") +
            (j.value("estimate", false) ? " (estimate)" : ""));
  if (j.contains("fd_fmnist") && j["fd_fmnist"].is_number())
    summary_row(h, "FD-FMNIST, " + file, fmt(j["fd_fmnist"].get<double>()));
  if (j.contains("is_fmnist") && j["is_fmnist"].is_number())
    summary_row(h, "IS-FMNIST, " + file, fmt(j["is_fmnist"].get<double>()));
}

// Summary: the state of training and the headline metrics.
void write_summary(std::ostream& h, const nlohmann::json& config, const std::vector<LogPoint>& log,
                   const std::vector<std::pair<std::string, nlohmann::json>>& evals) {
  h << "<section id=\"summary\">\n<h2>Summary</h2>\n<table>\n";
  if (config.contains("model")) summary_row(h, "model", json_scalar_text(config["model"]));
  if (config.contains("data")) summary_row(h, "data", json_scalar_text(config["data"]));
  if (!log.empty()) summarize_log(h, log);
  for (const auto& [file, j] : evals) summarize_eval(h, file, j);
  h << "</table>\n</section>\n";
}

void write_curves(std::ostream& h, const std::vector<LogPoint>& log) {
  h << "<section id=\"curves\">\n<h2>Training curves</h2>\n<div class=\"plots\">\n";
  if (log.empty()) {
    h << "<p class=\"note\">No log.jsonl lines yet.</p>\n";
  } else {
    h << img_tag(plot_png(log, &LogPoint::loss, "loss", "training loss", true), "training loss")
      << "\n";
    h << img_tag(plot_png(log, &LogPoint::images_per_s, "images/s", "throughput", false),
                 "images per second")
      << "\n";
  }
  h << "</div>\n</section>\n";
}

void write_grids(std::ostream& h, const Grids& grids, int64_t all_grids,
                 std::vector<std::string>& warnings) {
  h << "<section id=\"grids\">\n<h2>Samples during training</h2>\n";
  if (grids.empty()) {
    h << "<p class=\"note\">No preview grids in grids/.</p>\n";
  } else {
    if (static_cast<int64_t>(grids.size()) < all_grids)
      h << "<p class=\"note\">" << grids.size() << " of " << all_grids
        << " grids, evenly spaced.</p>\n";
    h << "<div class=\"grids\">\n";
    for (const auto& [step, path] : grids) {
      const auto bytes = read_file(path.string());
      if (!is_png(bytes)) {
        warnings.push_back(path.string() + ": not a PNG file; skipped");
        continue;
      }
      h << "<figure>" << img_tag(bytes, "samples at step " + std::to_string(step))
        << "<figcaption>step " << step << "</figcaption></figure>\n";
    }
    h << "</div>\n";
  }
  h << "</section>\n";
}

void value_row(std::ostream& h, const std::string& k, const nlohmann::json& v) {
  h << "<tr><th>" << html_escape(k) << "</th><td class=\"num\">" << html_escape(json_scalar_text(v))
    << "</td></tr>\n";
}

// One row per value; an object's values one level down, as KEY.KEY2.
void write_eval_table(std::ostream& h, const std::string& file, const nlohmann::json& j) {
  h << "<h3>" << html_escape(file) << "</h3>\n<table>\n";
  for (const auto& [k, v] : j.items()) {
    if (v.is_object()) {
      for (const auto& [k2, v2] : v.items()) value_row(h, k + "." + k2, v2);
    } else {
      value_row(h, k, v);
    }
  }
  h << "</table>\n";
}

void write_evaluation(std::ostream& h, const EvalFolder& evals) {
  h << "<section id=\"eval\">\n<h2>Evaluation</h2>\n";
  if (evals.results.empty() && evals.pngs.empty())
    h << "<p class=\"note\">No results in eval/ (diffuse eval nll / diffuse eval fd write them "
         "there).</p>\n";
  for (const auto& [file, j] : evals.results) write_eval_table(h, file, j);
  if (!evals.pngs.empty()) {
    h << "<div class=\"plots\">\n";
    for (const auto& [file, bytes] : evals.pngs) h << img_tag(bytes, file) << "\n";
    h << "</div>\n";
  }
  h << "</section>\n";
}

void write_config(std::ostream& h, const nlohmann::json& config) {
  h << "<section id=\"config\">\n<h2>Configuration</h2>\n";
  if (config.empty()) {
    h << "<p class=\"note\">No config.json.</p>\n";
  } else {
    h << "<table>\n";
    for (const auto& [k, v] : config.items()) value_row(h, k, v);
    h << "</table>\n";
  }
  h << "</section>\n";
}

void write_warnings(std::ostream& h, const std::vector<std::string>& warnings) {
  if (warnings.empty()) return;
  h << "<section id=\"warnings\">\n<h2>Warnings</h2>\n<ul>\n";
  for (const auto& w : warnings) h << "<li>" << html_escape(w) << "</li>\n";
  h << "</ul>\n</section>\n";
}

}  // namespace

std::vector<LogPoint> read_training_log(const std::string& path,
                                        std::vector<std::string>* warnings) {
  std::vector<LogPoint> out;
  std::ifstream in(path);
  if (!in) return out;
  std::string line;
  int64_t lineno = 0;
  auto num = [](const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : NAN;
  };
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number()) {
      if (warnings)
        warnings->push_back(path + ":" + std::to_string(lineno) + ": skipped (not a log line)");
      continue;
    }
    LogPoint p;
    p.step = j["step"].get<int64_t>();
    p.loss = num(j, "loss");
    p.grad_norm = num(j, "grad_norm");
    p.lr = num(j, "lr");
    p.images_per_s = num(j, "images_per_s");
    p.wall_time = num(j, "wall_time");
    out.push_back(p);
  }
  return out;
}

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::string render_report_html(const std::string& run_dir, const ReportOptions& options) {
  const fs::path run(run_dir);
  check(fs::is_directory(run), "report: ", run_dir, " is not a folder");
  const auto config_path = run / "config.json", log_path = run / "log.jsonl";
  check(fs::exists(config_path) || fs::exists(log_path), "report: ", run_dir,
        " is not a diffuse run folder (no config.json or log.jsonl)");
  std::vector<std::string> warnings;
  const auto config = read_config(config_path, warnings);
  const auto log = read_training_log(log_path.string(), &warnings);
  const auto evals = read_eval_folder(run / "eval", warnings);
  auto grids = preview_grids(run / "grids");
  const auto all_grids = static_cast<int64_t>(grids.size());
  grids = thin_evenly(std::move(grids), options.max_grids);

  std::ostringstream h;
  write_head(h, run, run_dir);
  write_summary(h, config, log, evals.results);
  write_curves(h, log);
  write_grids(h, grids, all_grids, warnings);
  write_evaluation(h, evals);
  write_config(h, config);
  write_warnings(h, warnings);
  h << "</body>\n</html>\n";
  return h.str();
}

void write_report(const std::string& run_dir, const std::string& out_path,
                  const ReportOptions& options) {
  write_file_atomic(out_path, render_report_html(run_dir, options));
}

}  // namespace diffuse
