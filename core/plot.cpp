// core/plot.cpp: see core/plot.h.
#include "core/plot.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace octet {

// ---- font ----

namespace {
struct Glyph {
  char ch;
  uint8_t rows[7];
};
// 5x7, bit 4 = leftmost column.
constexpr Glyph kFont[] = {
    {' ', {0, 0, 0, 0, 0, 0, 0}},
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
    {'A', {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}},
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
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0, 0, 0, 0, 0, 0x0C, 0x0C}},
    {',', {0, 0, 0, 0, 0x0C, 0x04, 0x08}},
    {'-', {0, 0, 0, 0x1F, 0, 0, 0}},
    {'+', {0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0}},
    {':', {0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0}},
    {';', {0, 0x0C, 0x0C, 0, 0x0C, 0x04, 0x08}},
    {'/', {0, 0x01, 0x02, 0x04, 0x08, 0x10, 0}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'=', {0, 0, 0x1F, 0, 0x1F, 0, 0}},
    {'_', {0, 0, 0, 0, 0, 0, 0x1F}},
    {'\'', {0x04, 0x04, 0x08, 0, 0, 0, 0}},
    {'"', {0x0A, 0x0A, 0, 0, 0, 0, 0}},
    {'!', {0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
    {'*', {0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0}},
    {'@', {0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0E}},
    {'&', {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D}},
    {'^', {0x04, 0x0A, 0x11, 0, 0, 0, 0}},
    {'|', {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
};
constexpr uint8_t kBox[7] = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F};

const Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGrid{225, 225, 225}, kText{40, 40, 40};
}  // namespace

const uint8_t* glyph(char ch) {
  const char up = char(std::toupper(static_cast<unsigned char>(ch)));
  for (const Glyph& g : kFont)
    if (g.ch == up) return g.rows;
  return nullptr;
}

int text_width(const std::string& text, int scale) {
  return text.empty() ? 0 : (int(text.size()) * kGlyphAdvance - 1) * scale;
}

namespace {
void put(Image& img, int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  uint8_t* p = &img.pixels[(size_t(y) * img.width + x) * 3];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}

void fill_rect(Image& img, int x0, int y0, int x1, int y1, Rgb c) {  // inclusive corners
  for (int y = std::max(y0, 0); y <= std::min(y1, img.height - 1); ++y)
    for (int x = std::max(x0, 0); x <= std::min(x1, img.width - 1); ++x) put(img, x, y, c);
}

// Bresenham from (x0, y0) to (x1, y1), `thick` pixels wide, kept inside the clip box.
void draw_line(Image& img, int x0, int y0, int x1, int y1, Rgb c, int thick, const ChartFrame* clip) {
  int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
  int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  const int lo = -(thick - 1) / 2, hi = thick / 2;
  for (;;) {
    for (int oy = lo; oy <= hi; ++oy)
      for (int ox = lo; ox <= hi; ++ox) {
        int x = x0 + ox, y = y0 + oy;
        if (clip && (x < clip->left || x > clip->right || y < clip->top || y > clip->bottom)) continue;
        put(img, x, y, c);
      }
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

Image blank(int w, int h) {
  if (w < 160 || h < 120 || w > 8192 || h > 8192)
    throw std::invalid_argument("chart size " + std::to_string(w) + "x" + std::to_string(h) +
                                " out of range (160x120 .. 8192x8192)");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  img.pixels.assign(size_t(w) * h * 3, 255);
  return img;
}

// A "nice" step (1, 2 or 5 x 10^k) giving about `ticks` intervals over span.
double nice_step(double span, int ticks) {
  const double raw = span / ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

// Widens [lo, hi] to whole ticks; degenerate or empty ranges get a unit span.
void nice_range(double& lo, double& hi, double& step, int ticks) {
  if (!(lo <= hi) || !std::isfinite(lo) || !std::isfinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (hi - lo <= std::abs(hi) * 1e-12) {
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  step = nice_step(hi - lo, ticks);
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-9) v = 0;  // no "-0"
  const int decimals = std::clamp(int(-std::floor(std::log10(step) + 1e-9)), 0, 9);
  char buf[64];
  if (std::abs(v) >= 1e7 || (v != 0 && std::abs(v) < 1e-6))
    std::snprintf(buf, sizeof buf, "%.3g", v);
  else
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Canvas margins around the plot area.
ChartFrame frame_for(int width, int height, double x0, double x1, double y0, double y1, bool x_integer) {
  ChartFrame f;
  nice_range(x0, x1, f.x_step, 8);
  nice_range(y0, y1, f.y_step, 6);
  if (x_integer && f.x_step < 1) {  // epochs and the like: integer ticks
    f.x_step = 1;
    x0 = std::floor(x0);
    x1 = std::ceil(x1);
  }
  f.x0 = x0;
  f.x1 = x1;
  f.y0 = y0;
  f.y1 = y1;
  int label_w = 0;
  for (double v = y0; v <= y1 + f.y_step * 0.5; v += f.y_step)
    label_w = std::max(label_w, text_width(tick_label(v, f.y_step)));
  f.left = label_w + 16;
  f.top = 36;
  f.right = width - 20;
  f.bottom = height - 36;
  return f;
}

void draw_frame(Image& img, const ChartFrame& f, const std::string& title, const std::string& xlabel,
                const std::string& ylabel) {
  // Grid and tick labels.
  for (int i = 0;; ++i) {
    double v = f.x0 + i * f.x_step;
    if (v > f.x1 + f.x_step * 1e-6) break;
    int x = f.px(v);
    draw_line(img, x, f.top, x, f.bottom, kGrid, 1, nullptr);
    draw_line(img, x, f.bottom, x, f.bottom + 4, kBlack, 1, nullptr);
    std::string s = tick_label(v, f.x_step);
    draw_text(img, x - text_width(s) / 2, f.bottom + 7, s, kText);
  }
  for (int i = 0;; ++i) {
    double v = f.y0 + i * f.y_step;
    if (v > f.y1 + f.y_step * 1e-6) break;
    int y = f.py(v);
    draw_line(img, f.left, y, f.right, y, kGrid, 1, nullptr);
    draw_line(img, f.left - 4, y, f.left, y, kBlack, 1, nullptr);
    std::string s = tick_label(v, f.y_step);
    draw_text(img, f.left - 7 - text_width(s), y - kGlyphHeight / 2, s, kText);
  }
  // Axes.
  draw_line(img, f.left, f.top, f.left, f.bottom, kBlack, 1, nullptr);
  draw_line(img, f.left, f.bottom, f.right, f.bottom, kBlack, 1, nullptr);
  // Labels.
  if (!title.empty()) draw_text(img, (img.width - text_width(title, 2)) / 2, 8, title, kBlack, 2);
  if (!xlabel.empty()) draw_text(img, (f.left + f.right - text_width(xlabel)) / 2, img.height - 14, xlabel, kText);
  if (!ylabel.empty()) draw_text(img, 4, f.top - 12, ylabel, kText);
}
}  // namespace

int draw_text(Image& img, int x, int y, const std::string& text, Rgb color, int scale) {
  if (img.channels != 3) throw std::invalid_argument("draw_text: needs an RGB image");
  int cx = x;
  for (char ch : text) {
    const uint8_t* rows = glyph(ch);
    if (!rows) rows = kBox;
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int col = 0; col < kGlyphWidth; ++col)
        if (rows[r] & (0x10 >> col))
          fill_rect(img, cx + col * scale, y + r * scale, cx + col * scale + scale - 1, y + r * scale + scale - 1,
                    color);
    cx += kGlyphAdvance * scale;
  }
  return text_width(text, scale);
}

Rgb palette_color(int i) {
  static const Rgb kPalette[] = {{31, 119, 180}, {214, 39, 40},  {44, 160, 44},   {255, 127, 14}, {148, 103, 189},
                                 {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
  constexpr int n = int(sizeof kPalette / sizeof kPalette[0]);
  return kPalette[((i % n) + n) % n];
}

int ChartFrame::px(double x) const { return left + int(std::lround((x - x0) / (x1 - x0) * (right - left))); }
int ChartFrame::py(double y) const { return bottom - int(std::lround((y - y0) / (y1 - y0) * (bottom - top))); }

// ---- line charts ----

namespace {
double series_x(const Series& s, size_t i) { return s.x.empty() ? double(i + 1) : s.x[i]; }

void check_series(const LineChart& chart) {
  for (const Series& s : chart.series) {
    if (!s.x.empty() && s.x.size() != s.y.size())
      throw std::invalid_argument("line chart '" + chart.title + "': series '" + s.name + "' has " +
                                  std::to_string(s.x.size()) + " x values and " + std::to_string(s.y.size()) +
                                  " y values");
    const bool band = !s.lo.empty() || !s.hi.empty();
    if (band && (s.lo.size() != s.y.size() || s.hi.size() != s.y.size()))
      throw std::invalid_argument("line chart '" + chart.title + "': series '" + s.name + "' has a band of " +
                                  std::to_string(s.lo.size()) + " lo and " + std::to_string(s.hi.size()) +
                                  " hi values for " + std::to_string(s.y.size()) + " y values");
  }
}

// 25% of the colour over 75% white.
Rgb tint(Rgb c) {
  auto mix = [](uint8_t v) { return uint8_t((int(v) + 3 * 255 + 2) / 4); };
  return {mix(c.r), mix(c.g), mix(c.b)};
}

// Fills the area between s.lo and s.hi, column by column, interpolating both
// edges linearly between consecutive finite points; clipped to the inside of
// the plot area so the axes stay visible.
void fill_band(Image& img, const ChartFrame& f, const Series& s, Rgb c) {
  auto finite = [&](size_t i) {
    return std::isfinite(series_x(s, i)) && std::isfinite(s.lo[i]) && std::isfinite(s.hi[i]);
  };
  auto span = [&](int x, double lo, double hi) {
    if (x <= f.left || x > f.right) return;
    int y0 = f.py(std::max(lo, hi)), y1 = f.py(std::min(lo, hi));
    fill_rect(img, x, std::max(y0, f.top), x, std::min(y1, f.bottom - 1), c);
  };
  for (size_t i = 0; i < s.lo.size(); ++i) {
    if (!finite(i)) continue;
    const int xa = f.px(series_x(s, i));
    if (i + 1 >= s.lo.size() || !finite(i + 1)) {
      span(xa, s.lo[i], s.hi[i]);  // a lone point: one column
      continue;
    }
    const int xb = f.px(series_x(s, i + 1));
    if (xa == xb) {
      span(xa, std::min(s.lo[i], s.lo[i + 1]), std::max(s.hi[i], s.hi[i + 1]));
      continue;
    }
    const int step = xa < xb ? 1 : -1;
    for (int x = xa;; x += step) {
      const double t = double(x - xa) / (xb - xa);
      span(x, s.lo[i] + t * (s.lo[i + 1] - s.lo[i]), s.hi[i] + t * (s.hi[i + 1] - s.hi[i]));
      if (x == xb) break;
    }
  }
}
}  // namespace

ChartFrame line_chart_frame(const LineChart& chart) {
  check_series(chart);
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  bool x_integer = true;
  for (const Series& s : chart.series)
    for (size_t i = 0; i < s.y.size(); ++i) {
      double x = series_x(s, i), y = s.y[i];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      for (const std::vector<double>* band : {&s.lo, &s.hi})
        if (!band->empty() && std::isfinite((*band)[i])) {
          ylo = std::min(ylo, (*band)[i]);
          yhi = std::max(yhi, (*band)[i]);
        }
      xlo = std::min(xlo, x);
      xhi = std::max(xhi, x);
      ylo = std::min(ylo, y);
      yhi = std::max(yhi, y);
      x_integer = x_integer && x == std::floor(x);
    }
  return frame_for(chart.width, chart.height, xlo, xhi, ylo, yhi, x_integer);
}

Image render_line_chart(const LineChart& chart) {
  Image img = blank(chart.width, chart.height);
  const ChartFrame f = line_chart_frame(chart);
  draw_frame(img, f, chart.title, chart.xlabel, chart.ylabel);
  for (size_t k = 0; k < chart.series.size(); ++k)  // bands first: lines go over every band
    if (!chart.series[k].lo.empty())
      fill_band(img, f, chart.series[k], tint(chart.series[k].color.value_or(palette_color(int(k)))));
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    const Rgb c = s.color.value_or(palette_color(int(k)));
    bool have_prev = false;
    int px0 = 0, py0 = 0;
    for (size_t i = 0; i < s.y.size(); ++i) {
      double x = series_x(s, i), y = s.y[i];
      if (!std::isfinite(x) || !std::isfinite(y)) {
        have_prev = false;
        continue;
      }
      int px1 = f.px(x), py1 = f.py(y);
      if (have_prev)
        draw_line(img, px0, py0, px1, py1, c, 2, &f);
      else
        draw_line(img, px1, py1, px1, py1, c, 3, &f);  // a lone point stays visible
      px0 = px1;
      py0 = py1;
      have_prev = true;
    }
  }
  // Legend: top-right inside the plot area.
  int named = 0, legend_w = 0;
  for (const Series& s : chart.series)
    if (!s.name.empty()) {
      ++named;
      legend_w = std::max(legend_w, text_width(s.name));
    }
  if (named > 0) {
    const int row = 12, x1 = f.right - 6, x0 = x1 - legend_w - 30, y0 = f.top + 6;
    fill_rect(img, x0, y0, x1, y0 + named * row + 6, kWhite);
    draw_line(img, x0, y0, x1, y0, kGrid, 1, nullptr);
    draw_line(img, x0, y0 + named * row + 6, x1, y0 + named * row + 6, kGrid, 1, nullptr);
    draw_line(img, x0, y0, x0, y0 + named * row + 6, kGrid, 1, nullptr);
    draw_line(img, x1, y0, x1, y0 + named * row + 6, kGrid, 1, nullptr);
    int y = y0 + 5;
    for (size_t k = 0; k < chart.series.size(); ++k) {
      const Series& s = chart.series[k];
      if (s.name.empty()) continue;
      const Rgb c = s.color.value_or(palette_color(int(k)));
      fill_rect(img, x0 + 5, y + 2, x0 + 21, y + 4, c);
      draw_text(img, x0 + 26, y, s.name, kText);
      y += row;
    }
  }
  return img;
}

void write_line_chart(const std::string& path, const LineChart& chart) { write_png(path, render_line_chart(chart)); }

// ---- histograms ----

namespace {
template <class T>
HistogramChart histogram_of(std::span<const T> values, int bins, std::string title, std::string xlabel) {
  if (bins < 1) throw std::invalid_argument("make_histogram '" + title + "': bins must be >= 1");
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (T v : values)
    if (std::isfinite(double(v))) {
      lo = std::min(lo, double(v));
      hi = std::max(hi, double(v));
    }
  if (!(lo <= hi)) lo = 0, hi = 1;  // no finite values
  if (hi == lo) lo -= 0.5, hi += 0.5;
  HistogramChart h;
  h.title = std::move(title);
  h.xlabel = std::move(xlabel);
  for (int i = 0; i <= bins; ++i) h.edges.push_back(lo + (hi - lo) * i / bins);
  h.counts.assign(size_t(bins), 0.0);
  for (T v : values) {
    const double d = double(v);
    if (!std::isfinite(d)) continue;
    int b = int((d - lo) / (hi - lo) * bins);
    h.counts[size_t(std::clamp(b, 0, bins - 1))] += 1;
  }
  return h;
}

void check_histogram(const HistogramChart& h) {
  if (h.counts.empty() || h.edges.size() != h.counts.size() + 1)
    throw std::invalid_argument("histogram '" + h.title + "': needs bins + 1 edges for bins counts, got " +
                                std::to_string(h.edges.size()) + " edges and " + std::to_string(h.counts.size()) +
                                " counts");
  for (size_t i = 0; i + 1 < h.edges.size(); ++i)
    if (!(h.edges[i] < h.edges[i + 1]) || !std::isfinite(h.edges[i + 1]))
      throw std::invalid_argument("histogram '" + h.title + "': edges must be finite and increasing (edge " +
                                  std::to_string(i + 1) + ")");
  for (double c : h.counts)
    if (!(c >= 0) || !std::isfinite(c))
      throw std::invalid_argument("histogram '" + h.title + "': counts must be finite and >= 0");
}
}  // namespace

HistogramChart make_histogram(std::span<const double> values, int bins, std::string title, std::string xlabel) {
  return histogram_of(values, bins, std::move(title), std::move(xlabel));
}
HistogramChart make_histogram(std::span<const float> values, int bins, std::string title, std::string xlabel) {
  return histogram_of(values, bins, std::move(title), std::move(xlabel));
}

ChartFrame histogram_frame(const HistogramChart& h) {
  check_histogram(h);
  const double top = *std::max_element(h.counts.begin(), h.counts.end());
  return frame_for(h.width, h.height, h.edges.front(), h.edges.back(), 0.0, top > 0 ? top : 1.0, false);
}

Image render_histogram(const HistogramChart& h) {
  Image img = blank(h.width, h.height);
  const ChartFrame f = histogram_frame(h);
  draw_frame(img, f, h.title, h.xlabel, "count");
  const Rgb edge{std::uint8_t(h.color.r / 2), std::uint8_t(h.color.g / 2), std::uint8_t(h.color.b / 2)};
  for (size_t i = 0; i < h.counts.size(); ++i) {
    if (h.counts[i] <= 0) continue;
    int x0 = f.px(h.edges[i]), x1 = f.px(h.edges[i + 1]), y = f.py(h.counts[i]);
    fill_rect(img, x0, y, x1, f.bottom - 1, h.color);
    draw_line(img, x0, y, x1, y, edge, 1, nullptr);
    draw_line(img, x0, y, x0, f.bottom, edge, 1, nullptr);
    draw_line(img, x1, y, x1, f.bottom, edge, 1, nullptr);
  }
  return img;
}

void write_histogram(const std::string& path, const HistogramChart& chart) { write_png(path, render_histogram(chart)); }

}  // namespace octet
