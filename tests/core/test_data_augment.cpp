// Augmentation (crop with zero padding, flip, seeded parameters) and
// preprocessing (standard, vgg, inception as per-channel affine maps),
// plus the channel statistics of a dataset.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "core/augment.h"
#include "core/dataset.h"
#include "core/parallel.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;

namespace {
constexpr int C = 3, H = 6, W = 5;

// Distinct non-zero values: v(c, y, x) = 1 + c*64 + y*8 + x.
std::vector<uint8_t> ramp_image() {
  std::vector<uint8_t> img(C * H * W);
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) img[size_t((c * H + y) * W + x)] = uint8_t(1 + c * 64 + y * 8 + x);
  return img;
}
uint8_t at(const std::vector<uint8_t>& img, int c, int y, int x) { return img[size_t((c * H + y) * W + x)]; }
}  // namespace

TEST_CASE("crop shift moves the image and fills the padding with zeros") {
  const std::vector<uint8_t> src = ramp_image();
  std::vector<uint8_t> dst(src.size(), 99);
  // Window 2 rows down and 3 columns left of centre: out(y, x) = in(y + 2, x - 3).
  augment_image(src.data(), dst.data(), C, H, W, {.dy = 2, .dx = -3, .flip = false});
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const bool inside = y + 2 < H && x - 3 >= 0;
        CHECK(at(dst, c, y, x) == (inside ? at(src, c, y + 2, x - 3) : 0));
      }
  // Spot checks of the same thing, written out.
  CHECK(at(dst, 0, 0, 3) == at(src, 0, 2, 0));
  CHECK(at(dst, 2, 3, 4) == at(src, 2, 5, 1));
  CHECK(at(dst, 1, 4, 4) == 0);  // row 4 reads row 6: padding
  CHECK(at(dst, 1, 0, 2) == 0);  // column 2 reads column -1: padding

  augment_image(src.data(), dst.data(), C, H, W, {});
  CHECK(dst == src);  // no shift, no flip: identity
}

TEST_CASE("flip mirrors left-right, after the crop") {
  const std::vector<uint8_t> src = ramp_image();
  std::vector<uint8_t> dst(src.size());
  augment_image(src.data(), dst.data(), C, H, W, {.dy = 0, .dx = 0, .flip = true});
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) CHECK(at(dst, c, y, x) == at(src, c, y, W - 1 - x));

  // Crop then flip: final(y, x) = in(y + dy, (W-1-x) + dx).
  augment_image(src.data(), dst.data(), C, H, W, {.dy = -1, .dx = 2, .flip = true});
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int sy = y - 1, sx = W - 1 - x + 2;
        const bool inside = sy >= 0 && sx < W;
        CHECK(at(dst, c, y, x) == (inside ? at(src, c, sy, sx) : 0));
      }
  // Shifts of the whole width leave nothing but zeros.
  augment_image(src.data(), dst.data(), C, H, W, {.dy = 0, .dx = W, .flip = true});
  CHECK(std::all_of(dst.begin(), dst.end(), [](uint8_t v) { return v == 0; }));
}

TEST_CASE("augmentation parameters: uniform offsets in [-pad, pad], fair flips, seeded per sample") {
  std::set<int> dys, dxs;
  int flips = 0;
  const int n = 4000;
  for (int i = 0; i < n; ++i) {
    Rng rng = sample_rng(7, 3, i);
    AugmentParams p = draw_augment(rng, 4, true);
    CHECK(p.dy >= -4);
    CHECK(p.dy <= 4);
    CHECK(p.dx >= -4);
    CHECK(p.dx <= 4);
    dys.insert(p.dy);
    dxs.insert(p.dx);
    flips += p.flip;
  }
  CHECK(dys.size() == 9);
  CHECK(dxs.size() == 9);
  CHECK(std::abs(flips - n / 2) < 200);  // 6.3 sigma

  // Same (seed, epoch, index) -> same parameters; other epochs or seeds differ.
  auto params = [](uint64_t seed, int64_t epoch, int64_t index) {
    Rng rng = sample_rng(seed, epoch, index);
    return draw_augment(rng, 4, true);
  };
  int same_epoch = 0, other_epoch = 0, other_seed = 0;
  for (int i = 0; i < 200; ++i) {
    AugmentParams a = params(1, 5, i), b = params(1, 5, i), c = params(1, 6, i), d = params(2, 5, i);
    same_epoch += a.dy == b.dy && a.dx == b.dx && a.flip == b.flip;
    other_epoch += a.dy == c.dy && a.dx == c.dx && a.flip == c.flip;
    other_seed += a.dy == d.dy && a.dx == d.dx && a.flip == d.flip;
  }
  CHECK(same_epoch == 200);
  CHECK(other_epoch < 20);  // chance of a full match is 1/162
  CHECK(other_seed < 20);

  Rng rng(1);
  AugmentParams none = draw_augment(rng, 0, false);
  CHECK(none.dy == 0);
  CHECK(none.dx == 0);
  CHECK_FALSE(none.flip);
  CHECK_THROWS_AS(draw_augment(rng, -1, true), std::invalid_argument);
}

TEST_CASE("cutout: a clipped square at the drawn centre takes the fill, after crop and flip") {
  const std::vector<uint8_t> src = ramp_image();
  const uint8_t fill[C] = {200, 201, 202};
  // Shift + flip first, then a 4x4 square centred on (1, 4): rows -1..2 and
  // columns 2..5 of the output, clipped to rows 0..2 and columns 2..4.
  AugmentParams p{.dy = 1, .dx = 0, .flip = true, .cut_size = 4, .cut_y = 1, .cut_x = 4};
  std::vector<uint8_t> want(src.size()), got(src.size());
  augment_image(src.data(), want.data(), C, H, W, {.dy = 1, .dx = 0, .flip = true});
  augment_image(src.data(), got.data(), C, H, W, p, fill);
  int filled = 0;
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const bool inside = y <= 2 && x >= 2;
        CHECK(at(got, c, y, x) == (inside ? fill[c] : at(want, c, y, x)));
        filled += inside;
      }
  CHECK(filled == C * 3 * 3);
  // Odd size 3 centred on (3, 2): rows 2..4, columns 1..3, nothing clipped.
  augment_image(src.data(), got.data(), C, H, W, {.cut_size = 3, .cut_y = 3, .cut_x = 2}, fill);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const bool inside = y >= 2 && y <= 4 && x >= 1 && x <= 3;
      CHECK(at(got, 1, y, x) == (inside ? fill[1] : at(src, 1, y, x)));
    }
  CHECK_THROWS_AS(augment_image(src.data(), got.data(), C, H, W, {.cut_size = 3}), std::invalid_argument);  // no fill
}

TEST_CASE("cutout draws: centres cover the image, size 0 draws nothing, the fill maps to 0") {
  std::set<int> ys, xs;
  for (int i = 0; i < 2000; ++i) {
    Rng rng = sample_rng(3, 1, i);
    AugmentParams p = draw_augment(rng, 4, true);
    draw_cutout(rng, 8, 32, 30, p);
    CHECK(p.cut_size == 8);
    CHECK(p.cut_y >= 0);
    CHECK(p.cut_y < 32);
    CHECK(p.cut_x >= 0);
    CHECK(p.cut_x < 30);
    ys.insert(p.cut_y);
    xs.insert(p.cut_x);
  }
  CHECK(ys.size() == 32);
  CHECK(xs.size() == 30);
  // Size 0 leaves the generator untouched: runs without cutout keep their draws.
  Rng a(5, 2), b(5, 2);
  AugmentParams p;
  draw_cutout(a, 0, 32, 32, p);
  CHECK(p.cut_size == 0);
  CHECK(a.next_u32() == b.next_u32());
  CHECK_THROWS_AS(draw_cutout(a, -1, 32, 32, p), std::invalid_argument);

  // The fill is the pixel whose preprocessed value is nearest 0.
  for (const Preprocess& pre : {Preprocess::standard(), Preprocess::vgg(), Preprocess::inception()}) {
    const std::vector<uint8_t> fill = cutout_fill(pre);
    REQUIRE(fill.size() == 3);
    for (int c = 0; c < 3; ++c)
      for (int v = 0; v < 256; ++v)  // (inception's 127 and 128 tie up to float rounding)
        CHECK(std::abs(pre.apply(c, fill[size_t(c)])) <= std::abs(pre.apply(c, uint8_t(v))) + 1e-6f);
  }
  CHECK(cutout_fill(Preprocess::vgg()) == std::vector<uint8_t>{124, 117, 104});
}

TEST_CASE("preprocessing: standard, vgg and inception on known pixels") {
  const std::vector<uint8_t> pix = {0, 1, 128, 255};
  // One 3 x 1 x 4 image: every channel holds the same four pixels.
  std::vector<uint8_t> img;
  for (int c = 0; c < 3; ++c) img.insert(img.end(), pix.begin(), pix.end());
  std::vector<float> out(img.size());

  SUBCASE("standard") {
    Preprocess p = Preprocess::standard();
    preprocess_image(img.data(), out.data(), 3, 1, 4, p);
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 4; ++i) {
        double want = (pix[size_t(i)] / 255.0 - kCifar10Mean[c]) / kCifar10Std[c];
        CHECK(out[size_t(c * 4 + i)] == doctest::Approx(want).epsilon(1e-6));
      }
    CHECK(out[0] == doctest::Approx(-0.4914 / 0.2470).epsilon(1e-6));
    // Custom statistics (e.g. from compute_channel_stats).
    Preprocess q = Preprocess::standard({0.5f, 0.5f, 0.5f}, {0.25f, 0.5f, 1.0f});
    CHECK(q.apply(0, 255) == doctest::Approx(2.0));
    CHECK(q.apply(1, 0) == doctest::Approx(-1.0));
    CHECK(q.apply(2, 255) == doctest::Approx(0.5));
    CHECK_THROWS_AS(Preprocess::standard({0.5f}, {0.0f}), std::invalid_argument);
  }
  SUBCASE("vgg: mean subtraction in 0..255 units, no scaling") {
    Preprocess p = Preprocess::vgg();
    preprocess_image(img.data(), out.data(), 3, 1, 4, p);
    const float means[3] = {123.68f, 116.78f, 103.94f};
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 4; ++i) CHECK(out[size_t(c * 4 + i)] == float(pix[size_t(i)]) - means[c]);
    CHECK(out[3] == doctest::Approx(131.32));
  }
  SUBCASE("inception: x / 127.5 - 1 in [-1, 1]") {
    Preprocess p = Preprocess::inception();
    preprocess_image(img.data(), out.data(), 3, 1, 4, p);
    for (int c = 0; c < 3; ++c) {
      CHECK(out[size_t(c * 4 + 0)] == -1.0f);
      CHECK(out[size_t(c * 4 + 1)] == doctest::Approx(1.0 / 127.5 - 1.0).epsilon(1e-6));
      CHECK(out[size_t(c * 4 + 2)] == doctest::Approx(128.0 / 127.5 - 1.0).epsilon(1e-5));
      CHECK(out[size_t(c * 4 + 3)] == doctest::Approx(1.0).epsilon(1e-6));
    }
  }
  SUBCASE("the affine form is exactly what the pipeline computes") {
    for (PreprocessMode m : {PreprocessMode::standard, PreprocessMode::vgg, PreprocessMode::inception}) {
      Preprocess p = Preprocess::make(m);
      CHECK(p.mode == m);
      CHECK(parse_preprocess(preprocess_name(m)) == m);
      preprocess_image(img.data(), out.data(), 3, 1, 4, p);
      for (int c = 0; c < 3; ++c)
        for (int i = 0; i < 4; ++i)
          CHECK(out[size_t(c * 4 + i)] == float(pix[size_t(i)]) * p.scale[size_t(c)] + p.offset[size_t(c)]);
    }
  }
  SUBCASE("errors") {
    std::string msg;
    try {
      parse_preprocess("caffe");
    } catch (const std::invalid_argument& e) {
      msg = e.what();
    }
    CHECK(msg.find("caffe") != std::string::npos);
    CHECK(msg.find("standard, vgg, inception") != std::string::npos);
    CHECK_THROWS_AS(preprocess_image(img.data(), out.data(), 1, 3, 4, Preprocess::vgg()), std::invalid_argument);
  }
}

TEST_CASE("preprocessing: every preset works on gray (1-channel) images; other counts are named") {
  const std::vector<uint8_t> pix = {0, 1, 128, 255};
  std::vector<float> out(pix.size());
  // standard: Fashion-MNIST's statistics by default (training computes the train set's, for any C).
  const Preprocess s = Preprocess::make(PreprocessMode::standard, 1);
  REQUIRE(s.channels() == 1);
  CHECK(s.apply(0, 0) == doctest::Approx(-kFashionMnistMean / kFashionMnistStd));
  CHECK(s.apply(0, 255) == doctest::Approx((1.0 - 0.2860) / 0.3530).epsilon(1e-5));
  // vgg: the luma of the RGB means (BT.601).
  const Preprocess v = Preprocess::make(PreprocessMode::vgg, 1);
  REQUIRE(v.channels() == 1);
  CHECK(v.scale[0] == 1.0f);
  CHECK(v.offset[0] == doctest::Approx(-(0.299 * 123.68 + 0.587 * 116.78 + 0.114 * 103.94)));
  CHECK(cutout_fill(v) == std::vector<uint8_t>{117});
  // inception: the same map on any number of channels.
  const Preprocess i1 = Preprocess::make(PreprocessMode::inception, 1), i4 = Preprocess::inception(4);
  CHECK(i1.channels() == 1);
  CHECK(i4.channels() == 4);
  CHECK(i4.apply(3, 255) == doctest::Approx(1.0));
  for (const Preprocess& p : {s, v, i1}) {
    CHECK(parse_preprocess(preprocess_name(p.mode)) == p.mode);
    preprocess_image(pix.data(), out.data(), 1, 1, 4, p);
    for (size_t k = 0; k < pix.size(); ++k) CHECK(out[k] == float(pix[k]) * p.scale[0] + p.offset[0]);
    CHECK_THROWS_AS(preprocess_image(pix.data(), out.data(), 3, 1, 1, p), std::invalid_argument);
  }
  CHECK(Preprocess::make(PreprocessMode::vgg).channels() == 3);  // the default stays RGB
  std::string msg;
  try {
    Preprocess::make(PreprocessMode::standard, 2);
  } catch (const std::invalid_argument& e) {
    msg = e.what();
  }
  CHECK(msg.find("not 2") != std::string::npos);
  CHECK_THROWS_AS(Preprocess::vgg(2), std::invalid_argument);
  CHECK_THROWS_AS(Preprocess::inception(0), std::invalid_argument);
}

TEST_CASE("compute_channel_stats: exact per-channel mean and std in [0, 1] units, any thread count") {
  Dataset d;
  d.channels = 2;
  d.height = 1;
  d.width = 2;
  d.class_names = {"x"};
  // Channel 0 pixels: 0, 255, 255, 0 -> mean 0.5, std 0.5. Channel 1: 51 everywhere -> 0.2, 0.
  d.images = {0, 255, 51, 51, 255, 0, 51, 51};
  d.labels = {0, 0};
  ChannelStats s = compute_channel_stats(d);
  CHECK(s.mean[0] == doctest::Approx(0.5));
  CHECK(s.std[0] == doctest::Approx(0.5));
  CHECK(s.mean[1] == doctest::Approx(0.2));
  CHECK(s.std[1] == doctest::Approx(0.0));

  Dataset r = random_dataset(3000);
  set_num_threads(1);
  ChannelStats one = compute_channel_stats(r);
  set_num_threads(2);
  ChannelStats two = compute_channel_stats(r);
  set_num_threads(0);
  CHECK(one.mean == two.mean);
  CHECK(one.std == two.std);
  for (int c = 0; c < 3; ++c) {  // uniform bytes: mean 127.5/255, std ~ 73.9/255
    CHECK(one.mean[size_t(c)] == doctest::Approx(0.5).epsilon(0.01));
    CHECK(one.std[size_t(c)] == doctest::Approx(std::sqrt((256.0 * 256.0 - 1) / 12) / 255).epsilon(0.01));
  }
  Dataset empty;
  CHECK_THROWS_AS(compute_channel_stats(empty), std::invalid_argument);
}

TEST_CASE("alternating flip: epoch 0 is the random coin, then every image alternates; half the images mirrored each epoch") {
  const int n = 2000;
  int mirrored0 = 0, mirrored1 = 0;
  for (int i = 0; i < n; ++i) {
    Rng first = sample_rng(11, 0, i);
    const bool coin = draw_augment(first, 4, true).flip;
    CHECK(alternating_flip(11, 0, i, 4) == coin);  // epoch 0: the ordinary random flip
    for (int64_t e = 1; e < 6; ++e) CHECK(alternating_flip(11, e, i, 4) == !alternating_flip(11, e - 1, i, 4));
    CHECK(alternating_flip(11, 7, i, 4) != alternating_flip(11, 40, i, 4));  // odd vs even epoch
    mirrored0 += alternating_flip(11, 0, i, 4);
    mirrored1 += alternating_flip(11, 1, i, 4);
  }
  CHECK(mirrored0 + mirrored1 == n);  // each image exactly once in the pair of epochs
  CHECK(std::abs(mirrored0 - n / 2) < 150);  // a fair coin (6.7 sigma)
  // Another seed draws other coins.
  int same = 0;
  for (int i = 0; i < n; ++i) same += alternating_flip(11, 0, i, 4) == alternating_flip(12, 0, i, 4);
  CHECK(std::abs(same - n / 2) < 150);
}
