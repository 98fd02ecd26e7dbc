// Raster charts: a known series lands where the frame says, the PNG decodes
// to the canvas size, text and legends are drawn, bands are tinted between
// their edges, histograms fill their bars.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <stb/stb_image.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "core/image.h"
#include "core/plot.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;

namespace {
Rgb pixel(const Image& img, int x, int y) { return {img.at(y, x, 0), img.at(y, x, 1), img.at(y, x, 2)}; }

// Whether `color` is within `r` pixels of (x, y).
bool near(const Image& img, int x, int y, Rgb color, int r = 1) {
  for (int dy = -r; dy <= r; ++dy)
    for (int dx = -r; dx <= r; ++dx) {
      int xx = x + dx, yy = y + dy;
      if (xx >= 0 && yy >= 0 && xx < img.width && yy < img.height && pixel(img, xx, yy) == color) return true;
    }
  return false;
}

int count_color(const Image& img, Rgb color) {
  int n = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) n += pixel(img, x, y) == color;
  return n;
}

LineChart known_chart() {
  LineChart c;
  c.title = "Training";
  c.xlabel = "epoch";
  c.ylabel = "loss / acc";
  c.width = 500;
  c.height = 320;
  Series loss{.name = "train loss", .x = {}, .y = {}, .color = Rgb{255, 0, 0}};
  Series acc{.name = "test acc", .x = {}, .y = {}, .color = Rgb{0, 0, 255}};
  for (int e = 1; e <= 20; ++e) {
    loss.y.push_back(2.0 * std::exp(-0.15 * e));
    acc.x.push_back(e);
    acc.y.push_back(0.3 + 0.03 * e);
  }
  c.series = {loss, acc};
  return c;
}
}  // namespace

TEST_CASE("line chart: the PNG decodes to the canvas size and the lines pass through the data") {
  TempDir tmp;
  const LineChart c = known_chart();
  const std::string path = tmp / "chart.png";
  write_line_chart(path, c);
  int w = 0, h = 0, n = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> data(stbi_load(path.c_str(), &w, &h, &n, 3), &stbi_image_free);
  REQUIRE(data);
  CHECK(w == 500);
  CHECK(h == 320);
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  img.pixels.assign(data.get(), data.get() + size_t(w) * h * 3);
  CHECK(img.pixels == render_line_chart(c).pixels);  // the file holds the rendering

  const ChartFrame f = line_chart_frame(c);
  CHECK(f.left > 0);
  CHECK(f.right < w);
  CHECK(f.top > 0);
  CHECK(f.bottom < h);
  CHECK(f.x0 <= 1.0);
  CHECK(f.x1 >= 20.0);
  CHECK(f.y0 <= 2.0 * std::exp(-0.15 * 20));
  CHECK(f.y1 >= 2.0 * std::exp(-0.15));
  // Every data point and the midpoint of every segment is on its line (the
  // legend box in the top-right may cover a few points, so allow 2 misses).
  for (const Series& s : c.series) {
    int misses = 0;
    for (size_t i = 0; i < s.y.size(); ++i) {
      const double x = s.x.empty() ? double(i + 1) : s.x[i];
      misses += !near(img, f.px(x), f.py(s.y[i]), *s.color);
      if (i + 1 < s.y.size()) {
        const double xn = s.x.empty() ? double(i + 2) : s.x[i + 1];
        misses += !near(img, (f.px(x) + f.px(xn)) / 2, (f.py(s.y[i]) + f.py(s.y[i + 1])) / 2, *s.color, 2);
      }
    }
    CHECK(misses <= 2);
  }
  // Lines are drawn only inside the plot area; the canvas is mostly background.
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (pixel(img, x, y) == Rgb{255, 0, 0}) {
        // The legend swatch is inside the frame too.
        CHECK((x >= f.left && x <= f.right && y >= f.top && y <= f.bottom));
      }
  CHECK(count_color(img, Rgb{255, 0, 0}) > 200);
  CHECK(count_color(img, Rgb{255, 255, 255}) > w * h / 2);
  // Axes are drawn: the left axis column is black from top to bottom.
  for (int y = f.top; y <= f.bottom; y += 10) CHECK((pixel(img, f.left, y) == Rgb{0, 0, 0} || near(img, f.left, y, Rgb{255, 0, 0})));
  // Title text (scale 2, black) appears above the frame.
  int title_px = 0;
  for (int y = 0; y < f.top; ++y)
    for (int x = 0; x < w; ++x) title_px += pixel(img, x, y) == Rgb{0, 0, 0};
  CHECK(title_px > 50);
}

TEST_CASE("line chart: empty and degenerate data render; mismatched series are rejected") {
  LineChart c;
  c.title = "empty";
  Image img = render_line_chart(c);
  CHECK(img.width == 640);
  CHECK(img.height == 400);
  c.series.push_back({.name = "flat", .x = {}, .y = {3.0, 3.0, NAN, 3.0}, .color = {}});
  img = render_line_chart(c);
  const ChartFrame f = line_chart_frame(c);
  CHECK(f.y0 < 3.0);
  CHECK(f.y1 > 3.0);
  CHECK(near(img, f.px(1), f.py(3.0), palette_color(0)));
  c.series.push_back({.name = "bad", .x = {1, 2}, .y = {1, 2, 3}, .color = {}});
  CHECK_THROWS_AS(render_line_chart(c), std::invalid_argument);
  LineChart tiny;
  tiny.width = 10;
  CHECK_THROWS_AS(render_line_chart(tiny), std::invalid_argument);
}

TEST_CASE("line chart: a band tints the area between lo and hi; its lengths are checked") {
  LineChart c;
  c.width = 500;
  c.height = 320;
  Series s{.name = "mean", .x = {}, .y = {}, .color = Rgb{255, 0, 0}};
  for (int i = 1; i <= 10; ++i) {
    s.y.push_back(i);
    s.lo.push_back(i - 1.0);
    s.hi.push_back(i + 1.0);
  }
  c.series = {s};
  const Rgb tint{255, 191, 191};  // 25% red over 75% white
  const Image img = render_line_chart(c);
  const ChartFrame f = line_chart_frame(c);
  CHECK(f.y0 <= 0.0);  // the y range holds the band, not just the line
  CHECK(f.y1 >= 11.0);
  CHECK(count_color(img, tint) > 1000);
  // Between consecutive points (away from the legend): tinted just inside
  // the band above and below the line, not tinted outside it.
  for (double x : {2.5, 3.5, 4.5, 5.5}) {
    const double y = x;  // the line y = x between the points
    CHECK(pixel(img, f.px(x), f.py(y + 0.6)) == tint);
    CHECK(pixel(img, f.px(x), f.py(y - 0.6)) == tint);
    CHECK(pixel(img, f.px(x), f.py(y + 1.4)) != tint);
    CHECK(pixel(img, f.px(x), f.py(y - 1.4)) != tint);
    CHECK(near(img, f.px(x), f.py(y), Rgb{255, 0, 0}, 2));  // the line is drawn over the band
  }
  // Tint only inside the plot area, never over the axes.
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      if (pixel(img, x, y) == tint) CHECK((x > f.left && x <= f.right && y >= f.top && y < f.bottom));
  // A chart without a band has no tinted pixel.
  c.series[0].lo.clear();
  c.series[0].hi.clear();
  CHECK(count_color(render_line_chart(c), tint) == 0);

  c.series[0].lo = {1, 2, 3};  // 3 lo values for 10 y values
  c.series[0].hi = s.hi;
  CHECK_THROWS_AS(render_line_chart(c), std::invalid_argument);
  c.series[0].lo = s.lo;  // hi missing
  c.series[0].hi.clear();
  CHECK_THROWS_AS(render_line_chart(c), std::invalid_argument);
  CHECK_THROWS_AS(line_chart_frame(c), std::invalid_argument);
}

TEST_CASE("histogram: bins counted, bars filled to their heights") {
  std::vector<double> values;
  for (int i = 0; i < 100; ++i) values.push_back(i < 70 ? 0.5 : 3.5);  // bins [0,1) and [3,4]
  values.push_back(NAN);                                               // ignored
  values.push_back(0.0);
  values.push_back(4.0);
  HistogramChart h = make_histogram(values, 4, "weights", "value");
  REQUIRE(h.edges.size() == 5);
  CHECK(h.edges.front() == 0.0);
  CHECK(h.edges.back() == 4.0);
  CHECK(h.counts == std::vector<double>{71, 0, 0, 31});
  Image img = render_histogram(h);
  const ChartFrame f = histogram_frame(h);
  CHECK(f.y1 >= 71);
  // Inside bar 0 (centre column, just above the axis, and just under its top).
  const int x0 = (f.px(0.0) + f.px(1.0)) / 2, x3 = (f.px(3.0) + f.px(4.0)) / 2;
  CHECK(pixel(img, x0, f.bottom - 2) == h.color);
  CHECK(pixel(img, x0, f.py(71) + 2) == h.color);
  CHECK(pixel(img, x0, f.py(71) - 3) != h.color);  // above the bar
  CHECK(pixel(img, x3, f.py(31) + 2) == h.color);
  CHECK(pixel(img, x3, f.py(71) + 2) != h.color);  // bar 3 is lower
  const int x1 = (f.px(1.0) + f.px(2.0)) / 2;
  CHECK(pixel(img, x1, f.bottom - 2) != h.color);  // empty bin

  TempDir tmp;
  write_histogram(tmp / "h.png", h);
  Image back = load_image(tmp / "h.png");
  CHECK(back.pixels == img.pixels);

  HistogramChart bad = h;
  bad.edges = {0, 1, 1, 2, 3};
  CHECK_THROWS_AS(render_histogram(bad), std::invalid_argument);
  bad.edges = {0, 1};
  CHECK_THROWS_AS(render_histogram(bad), std::invalid_argument);
  CHECK_THROWS_AS(make_histogram(values, 0, "x"), std::invalid_argument);
  std::vector<float> same(10, 2.0f);
  HistogramChart one = make_histogram(same, 3, "constant");
  CHECK(one.counts[1] == 10);  // a unit-wide range centred on the value
}

TEST_CASE("text: the 5x7 font draws digits and letters; unknown characters become a box") {
  Image img;
  img.width = 60;
  img.height = 10;
  img.channels = 3;
  img.pixels.assign(60 * 10 * 3, 255);
  CHECK(text_width("10") == 11);
  CHECK(draw_text(img, 0, 0, "1", Rgb{0, 0, 0}) == 5);
  // '1' is 0x04,0x0C,0x04,...,0x0E: column 2 set in every row.
  for (int r = 0; r < 7; ++r) CHECK(pixel(img, 2, r) == Rgb{0, 0, 0});
  CHECK(pixel(img, 0, 0) == Rgb{255, 255, 255});
  CHECK(glyph('a') == glyph('A'));  // lowercase drawn as capitals
  CHECK(glyph('7') != nullptr);
  CHECK(glyph('~') == nullptr);
  draw_text(img, 10, 0, "~", Rgb{0, 0, 0});
  CHECK(pixel(img, 10, 0) == Rgb{0, 0, 0});  // box corner
  CHECK(pixel(img, 12, 3) == Rgb{255, 255, 255});  // box inside
  draw_text(img, 55, 5, "888", Rgb{0, 0, 0});  // clipped, no crash
}
