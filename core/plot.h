// core/plot.h: tiny raster charts written as PNG (no dependency beyond
// stb_image_write): line charts of one or more series, and histograms.
// Text uses a built-in 5x7 bitmap font (digits, A-Z, common punctuation;
// lowercase letters are drawn as capitals).
//
//     LineChart c{.title = "resnet20", .xlabel = "epoch", .ylabel = "loss"};
//     c.series.push_back({.name = "train loss", .y = losses});   // x = 1, 2, ..., n
//     c.series.push_back({.name = "test loss", .x = epochs, .y = test_losses});
//     write_line_chart("out/loss.png", c);
//     // A shaded band around a curve: Series::lo / Series::hi (min..max over seeds).
//
//     write_histogram("out/w.png", make_histogram(weights, 50, "conv1 weights"));
//
// Layout: a white canvas; the plot area (frame) has axes on the left and at
// the bottom, grid lines at "nice" ticks (1, 2, 5 x 10^k) with their labels,
// the title above, the x label below, the y label above the y axis, and a
// legend in the top-right corner of the plot area. The axis ranges are the
// data ranges widened to the outer ticks. Non-finite points are skipped
// (the line is broken there).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/image.h"

namespace octet {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

// The colors series get when they name none, in order.
Rgb palette_color(int i);

struct Series {
  std::string name;
  std::vector<double> x;  // empty: 1, 2, ..., y.size()
  std::vector<double> y;
  std::optional<Rgb> color;  // default: palette_color(index of the series)
  // An optional band (e.g. min..max over seeds): both empty, or both y.size()
  // long. The area between lo and hi is filled with a light tint of the
  // series colour (25% colour, 75% white) before any line is drawn; the y
  // axis range includes the band (at points whose x and y are finite). A
  // point where lo or hi is not finite breaks the band there. ("= {}" lets a
  // designated initializer leave them out without -Wmissing-field-initializers.)
  std::vector<double> lo = {}, hi = {};
};

struct LineChart {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
  int width = 640, height = 400;
};

struct HistogramChart {
  std::string title, xlabel;
  std::vector<double> edges;   // bins + 1 increasing bin edges
  std::vector<double> counts;  // bins counts
  int width = 640, height = 400;
  Rgb color{70, 110, 200};
};

// `bins` equal bins over [min, max] of the finite values (the last bin
// includes max); non-finite values are ignored.
HistogramChart make_histogram(std::span<const double> values, int bins, std::string title, std::string xlabel = "");
HistogramChart make_histogram(std::span<const float> values, int bins, std::string title, std::string xlabel = "");

// Where data lands on the canvas: the plot area in pixels (left <= x <= right,
// top <= y <= bottom) and the axis ranges it shows.
struct ChartFrame {
  int left = 0, top = 0, right = 0, bottom = 0;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  double x_step = 1, y_step = 1;  // tick spacing
  int px(double x) const;  // canvas column of data x
  int py(double y) const;  // canvas row of data y
};

ChartFrame line_chart_frame(const LineChart& chart);
ChartFrame histogram_frame(const HistogramChart& chart);

// RGB images; throw std::invalid_argument for malformed charts (sizes that
// do not match, a canvas smaller than 160x120, edges not increasing).
Image render_line_chart(const LineChart& chart);
Image render_histogram(const HistogramChart& chart);

// Render + write_png (atomic).
void write_line_chart(const std::string& path, const LineChart& chart);
void write_histogram(const std::string& path, const HistogramChart& chart);

// Building blocks, exposed for tests and for other charts.
constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kGlyphAdvance = 6;
// The 7 rows of a glyph, bit 4 = leftmost column; nullptr for characters the
// font lacks (drawn as a hollow box).
const uint8_t* glyph(char ch);
// Draws text with its top-left corner at (x, y), each font pixel a
// scale x scale square; clipped to the canvas. Returns the width drawn.
int draw_text(Image& img, int x, int y, const std::string& text, Rgb color, int scale = 1);
int text_width(const std::string& text, int scale = 1);

}  // namespace octet
