// A small dependency-free line-plot renderer (loss curves, per-timestep NLL terms) that writes PNG.
#pragma once
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

struct Series {
  std::string label;
  std::vector<double> x, y;
};

// The colour series i is drawn in (a ten-colour palette, repeated).
std::array<uint8_t, 3> series_colour(size_t i);

// Draws the series on a white width x height canvas with axes, tick labels, a title, axis labels
// and a legend; returns (3, height, width) uint8. Non-finite points (and y <= 0 when log_y) are
// skipped and break the line. Text uses a built-in 5x7 font in capitals.
torch::Tensor render_line_plot(const std::vector<Series>& series, const std::string& title,
                               const std::string& xlabel, const std::string& ylabel,
                               bool log_y = false, int64_t width = 800, int64_t height = 500);

// render_line_plot written atomically as a PNG.
void save_line_plot(const std::string& path, const std::vector<Series>& series,
                    const std::string& title, const std::string& xlabel, const std::string& ylabel,
                    bool log_y = false, int64_t width = 800, int64_t height = 500);

}  // namespace diffuse
