#include "diffuse/report/plot.h"

#include <cmath>
#include <cstdio>

#include "diffuse/core/error.h"
#include "diffuse/io/image.h"

namespace diffuse {

namespace {

using Rgb = std::array<uint8_t, 3>;

constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGridGrey{225, 225, 225},
    kBoxGrey{160, 160, 160};

// ---- 5x7 bitmap font -------------------------------------------------------------------------
// Each glyph is seven rows, top first; bit 4 of a row is the leftmost pixel. Lower case letters
// are drawn with the capitals.

constexpr int kGlyphW = 5, kGlyphH = 7, kAdvance = kGlyphW + 1;

struct Glyph {
  char c;
  uint8_t rows[kGlyphH];
};

constexpr Glyph kFont[] = {
    {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {'/', {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'*', {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'|', {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
    {'!', {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}},
    {'\'', {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
};

const Glyph& glyph(char c) {
  if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  for (const auto& g : kFont)
    if (g.c == c) return g;
  for (const auto& g : kFont)
    if (g.c == '?') return g;
  return kFont[0];
}

int text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : (static_cast<int>(s.size()) * kAdvance - 1) * scale;
}

// ---- canvas ----------------------------------------------------------------------------------

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<size_t>(w) * h * 3, 255) {}

  void set(int x, int y, const Rgb& c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    std::copy(c.begin(), c.end(), px_.begin() + (static_cast<size_t>(y) * w_ + x) * 3);
  }

  void fill(int x0, int y0, int x1, int y1, const Rgb& c) {
    for (int y = std::max(y0, 0); y <= std::min(y1, h_ - 1); ++y)
      for (int x = std::max(x0, 0); x <= std::min(x1, w_ - 1); ++x) set(x, y, c);
  }

  // Bresenham's line, thickened by drawing a (thick x thick) square at each step.
  void line(int x0, int y0, int x1, int y1, const Rgb& c, int thick = 1) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    const int lo = -(thick - 1) / 2, hi = thick / 2;
    while (true) {
      fill(x0 + lo, y0 + lo, x0 + hi, y0 + hi, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }

  // Horizontal text with its top-left corner at (x, y); vertical text reads bottom to top with
  // its bottom-left corner at (x, y).
  void text(int x, int y, const std::string& s, const Rgb& c, int scale = 1,
            bool vertical = false) {
    for (size_t i = 0; i < s.size(); ++i) {
      const Glyph& g = glyph(s[i]);
      const int ox = static_cast<int>(i) * kAdvance * scale;
      for (int gy = 0; gy < kGlyphH; ++gy)
        for (int gx = 0; gx < kGlyphW; ++gx) {
          if (!(g.rows[gy] >> (kGlyphW - 1 - gx) & 1)) continue;
          const int u = ox + gx * scale, v = gy * scale;
          if (vertical)
            fill(x + v, y - u - scale + 1, x + v + scale - 1, y - u, c);
          else
            fill(x + u, y + v, x + u + scale - 1, y + v + scale - 1, c);
        }
    }
  }

  torch::Tensor to_chw() const {
    auto hwc = torch::from_blob(const_cast<uint8_t*>(px_.data()), {h_, w_, 3}, torch::kUInt8);
    return hwc.permute({2, 0, 1}).clone(at::MemoryFormat::Contiguous);
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;  // (H, W, 3)
};

// ---- axes ------------------------------------------------------------------------------------

struct Tick {
  double pos;  // in plotted coordinates (log10 of y when log_y)
  std::string label;
};

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Steps of 1, 2 or 5 times a power of ten giving about `target` ticks over [lo, hi].
std::vector<double> nice_values(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  if (!(raw > 0) || !std::isfinite(raw)) return {lo};
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  std::vector<double> out;
  for (double k = std::ceil(lo / step); k * step <= hi + step * 1e-9 && out.size() < 50; ++k)
    out.push_back(std::abs(k) < 1e-9 ? 0.0 : k * step);
  return out;
}

std::vector<Tick> linear_ticks(double lo, double hi) {
  std::vector<Tick> ticks;
  for (double v : nice_values(lo, hi, 6)) ticks.push_back({v, format_number(v)});
  return ticks;
}

// [lo, hi] are log10 values: whole decades when at least two fit, else round values inside.
std::vector<Tick> log_ticks(double lo, double hi) {
  std::vector<Tick> ticks;
  const double first = std::ceil(lo), last = std::floor(hi);
  if (last - first >= 1) {
    const double step = std::max(1.0, std::ceil((last - first) / 8));
    // Few decades leave room for 2x and 5x ticks between them.
    const bool fine = last - first < 3;
    for (double k = fine ? std::floor(lo) : first; k <= last; k += step)
      for (double m : {1.0, 2.0, 5.0}) {
        if (m != 1.0 && !fine) continue;
        const double p = k + std::log10(m);
        if (p >= lo && p <= hi) ticks.push_back({p, format_number(m * std::pow(10, k))});
      }
    return ticks;
  }
  for (double v : nice_values(std::pow(10, lo), std::pow(10, hi), 5))
    if (v > 0) ticks.push_back({std::log10(v), format_number(v)});
  return ticks;
}

// A degenerate range (one value, or no data) is widened so that it can be drawn.
void widen(double& lo, double& hi) {
  if (hi > lo) return;
  const double d = lo != 0 ? std::abs(lo) * 0.05 : 0.5;
  lo -= d;
  hi += d;
}

}  // namespace

std::array<uint8_t, 3> series_colour(size_t i) {
  // Ten hues far apart from one another and from the black/grey of the axes.
  static constexpr Rgb kPalette[] = {
      {31, 119, 180}, {255, 127, 14},  {44, 160, 44},  {214, 39, 40},  {148, 103, 189},
      {140, 86, 75},  {227, 119, 194}, {23, 190, 207}, {188, 189, 34}, {0, 0, 128},
  };
  return kPalette[i % (sizeof kPalette / sizeof kPalette[0])];
}

torch::Tensor render_line_plot(const std::vector<Series>& series, const std::string& title,
                               const std::string& xlabel, const std::string& ylabel, bool log_y,
                               int64_t width, int64_t height) {
  check(width >= 200 && width <= 8192 && height >= 150 && height <= 8192, "plot '", title,
        "': size ", width, "x", height, " is outside 200x150 .. 8192x8192");
  for (const auto& s : series)
    check(s.x.size() == s.y.size(), "plot '", title, "': series '", s.label, "' has ", s.x.size(),
          " x values but ", s.y.size(), " y values");

  auto usable = [&](double x, double y) {
    return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0);
  };
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!usable(s.x[i], s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, ty(s.y[i]));
      y_hi = std::max(y_hi, ty(s.y[i]));
    }
  if (x_lo > x_hi) x_lo = x_hi = 0;
  if (y_lo > y_hi) y_lo = y_hi = 0;
  widen(x_lo, x_hi);
  widen(y_lo, y_hi);
  const double y_pad = (y_hi - y_lo) * 0.05;
  y_lo -= y_pad;
  y_hi += y_pad;

  const auto xticks = linear_ticks(x_lo, x_hi);
  const auto yticks = log_y ? log_ticks(y_lo, y_hi) : linear_ticks(y_lo, y_hi);
  int ytick_w = 0;
  for (const auto& t : yticks) ytick_w = std::max(ytick_w, text_width(t.label, 1));

  const int W = static_cast<int>(width), H = static_cast<int>(height);
  const int left = 8 + (ylabel.empty() ? 0 : kGlyphH + 8) + ytick_w + 8;
  const int right = W - 20, top = title.empty() ? 20 : 40;
  const int bottom = H - (xlabel.empty() ? 24 : 40);
  auto px = [&](double x) {
    const double p = left + (x - x_lo) / (x_hi - x_lo) * (right - left);
    return static_cast<int>(std::lround(std::isfinite(p) ? std::clamp(p, -1e6, 1e6) : 0.0));
  };
  auto py = [&](double y) {
    const double p = bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top);
    return static_cast<int>(std::lround(std::isfinite(p) ? std::clamp(p, -1e6, 1e6) : 0.0));
  };

  Canvas c(W, H);
  for (const auto& t : xticks) {
    const int x = px(t.pos);
    if (x < left || x > right) continue;
    c.line(x, top, x, bottom, kGridGrey);
    c.line(x, bottom, x, bottom + 4, kBlack);
    c.text(x - text_width(t.label, 1) / 2, bottom + 7, t.label, kBlack);
  }
  for (const auto& t : yticks) {
    const int y = py(t.pos);
    if (y < top || y > bottom) continue;
    c.line(left, y, right, y, kGridGrey);
    c.line(left - 4, y, left, y, kBlack);
    c.text(left - 7 - text_width(t.label, 1), y - kGlyphH / 2, t.label, kBlack);
  }
  c.line(left, top, right, top, kBlack);
  c.line(left, bottom, right, bottom, kBlack);
  c.line(left, top, left, bottom, kBlack);
  c.line(right, top, right, bottom, kBlack);

  c.text(W / 2 - text_width(title, 2) / 2, 12, title, kBlack, 2);
  c.text((left + right) / 2 - text_width(xlabel, 1) / 2, H - 8 - kGlyphH, xlabel, kBlack);
  c.text(8, (top + bottom) / 2 + text_width(ylabel, 1) / 2, ylabel, kBlack, 1, true);

  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const Rgb colour = series_colour(k);
    const size_t n = s.x.size();
    for (size_t i = 0; i < n; ++i) {
      if (!usable(s.x[i], s.y[i])) continue;
      const int x = px(s.x[i]), y = py(ty(s.y[i]));
      const bool next = i + 1 < n && usable(s.x[i + 1], s.y[i + 1]);
      const bool prev = i > 0 && usable(s.x[i - 1], s.y[i - 1]);
      if (next) c.line(x, y, px(s.x[i + 1]), py(ty(s.y[i + 1])), colour, 2);
      if (!next && !prev) c.fill(x - 2, y - 2, x + 2, y + 2, colour);
    }
  }

  // Legend in the top-right corner of the plot area.
  int label_w = 0;
  for (const auto& s : series) label_w = std::max(label_w, text_width(s.label, 1));
  if (label_w > 0) {
    const int row = 12, box_w = 8 + 20 + 6 + label_w + 8;
    const int box_h = 6 + static_cast<int>(series.size()) * row;
    const int x0 = right - 8 - box_w, y0 = top + 8;
    c.fill(x0, y0, x0 + box_w, y0 + box_h, kWhite);
    c.line(x0, y0, x0 + box_w, y0, kBoxGrey);
    c.line(x0, y0 + box_h, x0 + box_w, y0 + box_h, kBoxGrey);
    c.line(x0, y0, x0, y0 + box_h, kBoxGrey);
    c.line(x0 + box_w, y0, x0 + box_w, y0 + box_h, kBoxGrey);
    for (size_t k = 0; k < series.size(); ++k) {
      const int y = y0 + 6 + static_cast<int>(k) * row;
      c.line(x0 + 8, y + kGlyphH / 2, x0 + 28, y + kGlyphH / 2, series_colour(k), 2);
      c.text(x0 + 34, y, series[k].label, kBlack);
    }
  }
  return c.to_chw();
}

void save_line_plot(const std::string& path, const std::vector<Series>& series,
                    const std::string& title, const std::string& xlabel, const std::string& ylabel,
                    bool log_y, int64_t width, int64_t height) {
  save_png(path, render_line_plot(series, title, xlabel, ylabel, log_y, width, height));
}

}  // namespace diffuse
