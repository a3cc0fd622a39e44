// One self-contained HTML page about a training run: loss and throughput curves from log.jsonl,
// the preview grids in step order, the run's config.json and any evaluation results in eval/.
// Every image is embedded as a base64 data: URI, so the page can be mailed or archived alone.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

// One line of a run's log.jsonl.
struct LogPoint {
  int64_t step = 0;
  double loss = NAN, grad_norm = NAN, lr = NAN, images_per_s = NAN, wall_time = NAN;
};

// Lines that are not JSON objects with a step (a line cut short by a kill, say) are skipped, each
// adding a note to `warnings`. A missing file gives no points.
std::vector<LogPoint> read_training_log(const std::string& path,
                                        std::vector<std::string>* warnings);

// Text made safe inside HTML elements and attribute values.
std::string html_escape(const std::string& text);

struct ReportOptions {
  int64_t max_grids =
      48;  // more preview grids than this are thinned evenly (the last always shown)
};

// The page for the run folder run_dir; throws diffuse::Error when the folder holds neither
// config.json nor log.jsonl.
std::string render_report_html(const std::string& run_dir, const ReportOptions& options = {});

// render_report_html written atomically to out_path.
void write_report(const std::string& run_dir, const std::string& out_path,
                  const ReportOptions& options = {});

}  // namespace diffuse
