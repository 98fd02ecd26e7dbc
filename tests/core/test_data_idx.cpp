// Data of any size and channel count: the IDX files of MNIST and
// Fashion-MNIST, plain and gzip-compressed (small files written here, then
// every kind of corruption, each error naming the file and what is wrong),
// the class names by folder name, shapes asked for (LoadOptions), gray image
// trees staying one channel, and a 1-channel 28x28 batch through the loader.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <stb/stb_image_write.h>
#include <zlib.h>

#include <filesystem>
#include <stdexcept>

#include "core/dataset.h"
#include "core/image.h"
#include "core/loader.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;
namespace fs = std::filesystem;

namespace {

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}

// The pixel of image i at (y, x) in the test files.
uint8_t idx_pixel(int64_t i, int y, int x) { return uint8_t((i * 13 + y * 7 + x * 3) & 255); }

// An IDX image file: magic 0x00000803, count, rows, cols, then the pixels.
std::vector<uint8_t> idx_images(uint32_t count, uint32_t rows, uint32_t cols, int64_t first = 0) {
  std::vector<uint8_t> b;
  put_be32(b, 0x00000803);
  put_be32(b, count);
  put_be32(b, rows);
  put_be32(b, cols);
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t y = 0; y < rows; ++y)
      for (uint32_t x = 0; x < cols; ++x) b.push_back(idx_pixel(first + i, int(y), int(x)));
  return b;
}

// An IDX label file: magic 0x00000801, count, then the labels.
std::vector<uint8_t> idx_labels(const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> b;
  put_be32(b, 0x00000801);
  put_be32(b, uint32_t(labels.size()));
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// One gzip member of `bytes` (zlib's deflate with the gzip wrapper).
std::vector<uint8_t> gzip(const std::vector<uint8_t>& bytes) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, uLong(bytes.size())) + 64);
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = uInt(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

const std::vector<uint8_t> kTrainLabels = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 5};
const std::vector<uint8_t> kTestLabels = {9, 0, 4};

// A small MNIST-like distribution in dir: 12 train images and 3 test images
// of 5 rows x 4 columns, each file gzip-compressed (".gz") or not.
void write_idx_set(const std::string& dir, bool gz) {
  const std::string ext = gz ? ".gz" : "";
  auto put = [&](const std::string& name, const std::vector<uint8_t>& b) { write_bytes(dir + "/" + name + ext, gz ? gzip(b) : b); };
  put("train-images-idx3-ubyte", idx_images(12, 5, 4));
  put("train-labels-idx1-ubyte", idx_labels(kTrainLabels));
  put("t10k-images-idx3-ubyte", idx_images(3, 5, 4, 100));
  put("t10k-labels-idx1-ubyte", idx_labels(kTestLabels));
}

void check_idx_set(const Dataset& train, const Dataset& test) {
  CHECK(train.channels == 1);
  CHECK(train.height == 5);
  CHECK(train.width == 4);
  CHECK(train.shape() == ImageShape{1, 5, 4});
  REQUIRE(train.size() == 12);
  CHECK(std::equal(kTrainLabels.begin(), kTrainLabels.end(), train.labels.begin()));
  for (int64_t i = 0; i < 12; ++i)
    for (int y = 0; y < 5; ++y)
      for (int x = 0; x < 4; ++x) CHECK(train.image(i)[y * 4 + x] == idx_pixel(i, y, x));
  REQUIRE(test.size() == 3);
  CHECK(test.labels == std::vector<int>{9, 0, 4});
  CHECK(test.image(2)[3 * 4 + 1] == idx_pixel(102, 3, 1));
}

std::vector<std::string> digits() {
  std::vector<std::string> d;
  for (int i = 0; i < 10; ++i) d.push_back(std::to_string(i));
  return d;
}

}  // namespace

// ---- reading ----

TEST_CASE("IDX: plain files load as 1-channel images with their labels, MNIST's digit names") {
  TempDir tmp;
  const std::string dir = tmp / "mnist";
  write_idx_set(dir, false);
  std::string found;
  CHECK(detect_format(dir, &found) == DataFormat::idx);
  CHECK(found == dir);
  const Dataset train = load_dataset(dir, Split::train), test = load_dataset(dir, Split::test);
  check_idx_set(train, test);
  CHECK(train.class_names == digits());
  CHECK(train.source == dir);
  // Channel statistics work on one channel as on three.
  const ChannelStats st = compute_channel_stats(train);
  CHECK(st.mean.size() == 1);
}

TEST_CASE("IDX: gzip files (Debian's dataset-fashion-mnist layout) read the same; a 'fashion' folder gets its names") {
  TempDir tmp;
  const std::string dir = tmp / "fashion-mnist";
  write_idx_set(dir, true);
  CHECK(detect_format(dir) == DataFormat::idx);
  const Dataset train = load_dataset(dir, Split::train), test = load_dataset(dir, Split::test);
  check_idx_set(train, test);
  CHECK(train.class_names == fashion_mnist_class_names());
  CHECK(train.class_names.front() == "T-shirt/top");
  CHECK(train.class_names.back() == "Ankle boot");
  // The uncompressed name wins when both are there.
  write_bytes(dir + "/t10k-labels-idx1-ubyte", idx_labels({1, 1, 1}));
  CHECK(load_dataset(dir, Split::test).labels == std::vector<int>{1, 1, 1});
}

TEST_CASE("IDX: torchvision's <root>/FashionMNIST/raw layout, and the names by folder") {
  TempDir tmp;
  const std::string raw = tmp / "data/FashionMNIST/raw";
  write_idx_set(raw, true);
  std::string found;
  CHECK(detect_format(tmp / "data/FashionMNIST", &found) == DataFormat::idx);
  CHECK(found == (fs::path(tmp / "data/FashionMNIST") / "raw").string());
  CHECK(load_dataset(tmp / "data/FashionMNIST", Split::train).class_names == fashion_mnist_class_names());
  CHECK(idx_class_names(raw) == fashion_mnist_class_names());
  CHECK(idx_class_names(raw + "/") == fashion_mnist_class_names());
  CHECK(idx_class_names(tmp / "FASHION_items") == fashion_mnist_class_names());  // any case
  CHECK(idx_class_names(tmp / "MNIST/raw") == digits());
  CHECK(idx_class_names(tmp / "digits") == digits());
}

TEST_CASE("IDX: a gzip file of several members (concatenated streams) reads whole") {
  TempDir tmp;
  const std::string dir = tmp / "mnist";
  write_idx_set(dir, false);
  const std::vector<uint8_t> plain = read_file_bytes(dir + "/train-images-idx3-ubyte");
  std::vector<uint8_t> two = gzip(std::vector<uint8_t>(plain.begin(), plain.begin() + 7));
  const std::vector<uint8_t> rest = gzip(std::vector<uint8_t>(plain.begin() + 7, plain.end()));
  two.insert(two.end(), rest.begin(), rest.end());
  fs::remove(dir + "/train-images-idx3-ubyte");
  write_bytes(dir + "/train-images-idx3-ubyte.gz", two);
  CHECK(read_maybe_gzip(dir + "/train-images-idx3-ubyte.gz") == plain);
  check_idx_set(load_dataset(dir, Split::train), load_dataset(dir, Split::test));
  // read_maybe_gzip leaves a plain file as it is.
  CHECK(read_maybe_gzip(dir + "/t10k-labels-idx1-ubyte") == idx_labels(kTestLabels));
}

// ---- every malformed input names the file and what is wrong ----

TEST_CASE("IDX: corrupt files are refused with the file's name and the reason") {
  TempDir tmp;
  const std::string dir = tmp / "mnist";
  write_idx_set(dir, false);
  const std::string images = dir + "/train-images-idx3-ubyte", labels = dir + "/train-labels-idx1-ubyte";
  auto train_error = [&] { return error_of([&] { load_dataset(dir, Split::train); }); };

  SUBCASE("bad magic: a label file where the images belong") {
    write_bytes(images, idx_labels(kTrainLabels));
    const std::string msg = train_error();
    CHECK(msg.find(images) != std::string::npos);
    CHECK(msg.find("bad magic number 0x00000801") != std::string::npos);
    CHECK(msg.find("expected 0x00000803") != std::string::npos);
  }
  SUBCASE("bad magic: not an IDX file at all") {
    write_text(labels, "this is no IDX file");
    const std::string msg = train_error();
    CHECK(msg.find(labels) != std::string::npos);
    CHECK(msg.find("bad magic number") != std::string::npos);
    CHECK(msg.find("expected 0x00000801") != std::string::npos);
  }
  SUBCASE("too short for a header") {
    write_bytes(images, {0, 0});
    const std::string msg = train_error();
    CHECK(msg.find(images) != std::string::npos);
    CHECK(msg.find("too short") != std::string::npos);
    std::vector<uint8_t> half = idx_images(12, 5, 4);
    half.resize(10);
    write_bytes(images, half);
    CHECK(train_error().find("truncated IDX header") != std::string::npos);
  }
  SUBCASE("image and label counts differ") {
    write_bytes(labels, idx_labels({1, 2, 3, 4, 5}));
    const std::string msg = train_error();
    CHECK(msg.find(images) != std::string::npos);
    CHECK(msg.find(labels) != std::string::npos);
    CHECK(msg.find("12 images") != std::string::npos);
    CHECK(msg.find("5 labels") != std::string::npos);
  }
  SUBCASE("the file size does not match the header: truncated, or bytes after the data") {
    std::vector<uint8_t> b = idx_images(12, 5, 4);
    b.pop_back();
    write_bytes(images, b);
    std::string msg = train_error();
    CHECK(msg.find(images) != std::string::npos);
    CHECK(msg.find("holds 255 bytes") != std::string::npos);
    CHECK(msg.find("12 images of 5x4") != std::string::npos);
    CHECK(msg.find("needs 256") != std::string::npos);
    CHECK(msg.find("truncated") != std::string::npos);
    b.push_back(0);
    b.push_back(0);
    write_bytes(images, b);
    CHECK(train_error().find("extra bytes") != std::string::npos);
    std::vector<uint8_t> l = idx_labels(kTrainLabels);
    l.push_back(1);
    write_bytes(images, idx_images(12, 5, 4));
    write_bytes(labels, l);
    msg = train_error();
    CHECK(msg.find(labels) != std::string::npos);
    CHECK(msg.find("12 labels") != std::string::npos);
  }
  SUBCASE("the gzip file's size does not match its header: said once decompressed") {
    std::vector<uint8_t> b = idx_images(12, 5, 4);
    b.resize(200);
    fs::remove(images);
    write_bytes(images + ".gz", gzip(b));
    const std::string msg = train_error();
    CHECK(msg.find(images + ".gz") != std::string::npos);
    CHECK(msg.find("holds 200 bytes once decompressed") != std::string::npos);
  }
  SUBCASE("insane dimensions") {
    std::vector<uint8_t> b = idx_images(1, 5, 4);
    b[11] = 0;  // rows 0
    write_bytes(images, b);
    std::string msg = train_error();
    CHECK(msg.find(images) != std::string::npos);
    CHECK(msg.find("rows x columns") != std::string::npos);
    b = idx_images(1, 5, 4);
    b[13] = 0x01;  // columns 65540
    write_bytes(images, b);
    CHECK(train_error().find("1..4096") != std::string::npos);
    write_bytes(images, idx_images(0, 5, 4));
    CHECK(train_error().find("0 images") != std::string::npos);
  }
  SUBCASE("a label out of 0..9") {
    std::vector<uint8_t> l = kTrainLabels;
    l[3] = 10;
    write_bytes(labels, idx_labels(l));
    const std::string msg = train_error();
    CHECK(msg.find(labels) != std::string::npos);
    CHECK(msg.find("label 3") != std::string::npos);
    CHECK(msg.find("is 10, out of range 0..9") != std::string::npos);
  }
  SUBCASE("a truncated .gz") {
    const std::vector<uint8_t> gz = gzip(idx_images(12, 5, 4));
    fs::remove(images);
    write_bytes(images + ".gz", std::vector<uint8_t>(gz.begin(), gz.begin() + gz.size() / 2));
    const std::string msg = train_error();
    CHECK(msg.find(images + ".gz") != std::string::npos);
    CHECK(msg.find("truncated gzip file") != std::string::npos);
    // Cut inside the trailer (CRC-32 and length) too.
    write_bytes(images + ".gz", std::vector<uint8_t>(gz.begin(), gz.end() - 3));
    CHECK(train_error().find("truncated gzip file") != std::string::npos);
  }
  SUBCASE("a .gz whose check sum is wrong") {
    std::vector<uint8_t> gz = gzip(idx_images(12, 5, 4));
    gz[gz.size() - 6] ^= 0xff;  // inside the CRC-32
    fs::remove(images);
    write_bytes(images + ".gz", gz);
    const std::string msg = train_error();
    CHECK(msg.find(images + ".gz") != std::string::npos);
    CHECK(msg.find("corrupt gzip data") != std::string::npos);
  }
  SUBCASE("junk after the gzip stream") {
    std::vector<uint8_t> gz = gzip(idx_images(12, 5, 4));
    gz.push_back('x');
    gz.push_back('y');
    fs::remove(images);
    write_bytes(images + ".gz", gz);
    const std::string msg = train_error();
    CHECK(msg.find(images + ".gz") != std::string::npos);
    CHECK(msg.find("2 bytes after the end of the gzip stream") != std::string::npos);
  }
  SUBCASE("a missing file of the split") {
    fs::remove(dir + "/t10k-labels-idx1-ubyte");
    const std::string msg = error_of([&] { load_dataset(dir, Split::test); });
    CHECK(msg.find(dir + "/t10k-labels-idx1-ubyte") != std::string::npos);
    CHECK(msg.find("missing") != std::string::npos);
  }
}

// ---- shapes asked for ----

TEST_CASE("IDX: the shape asked for (a model's input) is checked, resized only on request") {
  TempDir tmp;
  const std::string dir = tmp / "mnist";
  write_idx_set(dir, true);
  LoadOptions same;
  same.channels = 1;
  same.height = 5;
  same.width = 4;
  CHECK(load_dataset(dir, Split::test, same).shape() == ImageShape{1, 5, 4});

  LoadOptions rgb = same;
  rgb.channels = 3;
  rgb.wanted_by = "the input of m.oct";
  std::string msg = error_of([&] { load_dataset(dir, Split::test, rgb); });
  CHECK(msg.find("one channel") != std::string::npos);
  CHECK(msg.find("the input of m.oct") != std::string::npos);

  LoadOptions big;
  big.height = big.width = 8;
  big.wanted_by = "the input of m.oct";
  msg = error_of([&] { load_dataset(dir, Split::test, big); });
  CHECK(msg.find("t10k-images-idx3-ubyte.gz") != std::string::npos);
  CHECK(msg.find("4x5 (1 channel)") != std::string::npos);  // width x height
  CHECK(msg.find("8x8 (1 channel)") != std::string::npos);
  CHECK(msg.find("the input of m.oct") != std::string::npos);

  big.resize = true;
  const Dataset r = load_dataset(dir, Split::test, big);
  CHECK(r.shape() == ImageShape{1, 8, 8});
  CHECK(r.size() == 3);
  CHECK(r.images.size() == 3u * 64u);
}

TEST_CASE("CIFAR-10 binary refuses another channel count than its 3") {
  TempDir tmp;
  write_bytes(tmp / "bin/test_batch.bin", cifar_records(2));
  LoadOptions gray;
  gray.channels = 1;
  gray.records_per_file = 0;
  gray.wanted_by = "the input of m.oct";
  const std::string msg = error_of([&] { load_dataset(tmp / "bin", Split::test, gray); });
  CHECK(msg.find("32x32 (3 channels)") != std::string::npos);
  CHECK(msg.find("32x32 (1 channel)") != std::string::npos);
  CHECK(msg.find("the input of m.oct") != std::string::npos);
}

// ---- image trees ----

TEST_CASE("image tree: a tree of gray files stays one channel; channels asked for convert") {
  TempDir tmp;
  const std::string root = tmp / "tree";
  for (const char* cls : {"a", "b"}) {
    fs::create_directories(root + "/train/" + cls);
    for (int i = 0; i < 3; ++i) {
      std::vector<uint8_t> g(28 * 28);
      for (size_t p = 0; p < g.size(); ++p) g[p] = uint8_t((p * 5 + size_t(i) * 11 + (cls[0] == 'b' ? 100 : 0)) & 255);
      const std::string f = root + "/train/" + cls + "/" + std::to_string(i) + ".png";
      REQUIRE(stbi_write_png(f.c_str(), 28, 28, 1, g.data(), 28));
    }
  }
  const Dataset gray = load_image_folder(root, "train");
  CHECK(gray.shape() == ImageShape{1, 28, 28});
  REQUIRE(gray.size() == 6);
  CHECK(gray.images.size() == 6u * 28u * 28u);
  for (int64_t i = 0; i < 6; ++i)
    for (int p = 0; p < 28 * 28; p += 37)
      CHECK(gray.image(i)[p] == uint8_t((p * 5 + (i % 3) * 11 + (i >= 3 ? 100 : 0)) & 255));

  // Asked for 3 channels (a color model): gray replicated into R, G, B.
  LoadOptions rgb;
  rgb.channels = 3;
  const Dataset three = load_image_folder(root, "train", rgb);
  CHECK(three.shape() == ImageShape{3, 28, 28});
  for (int c = 0; c < 3; ++c) CHECK(std::equal(gray.image(4), gray.image(4) + 784, three.image(4) + c * 784));

  // One color file makes the tree RGB; asked for 1 channel, it is turned to gray.
  {
    std::vector<uint8_t> rgb_px(28 * 28 * 3, 0);
    for (size_t p = 0; p < 28 * 28; ++p) rgb_px[p * 3] = 200;  // red
    write_png(root + "/train/b/9.png", rgb_px.data(), 28, 28, 3);
  }
  CHECK(load_image_folder(root, "train").channels == 3);
  LoadOptions one;
  one.channels = 1;
  const Dataset luma = load_image_folder(root, "train", one);
  CHECK(luma.shape() == ImageShape{1, 28, 28});
  CHECK(luma.size() == 7);
  CHECK(std::abs(int(luma.image(6)[0]) - int(0.299 * 200)) <= 1);  // stb_image's luma of pure red
}

// ---- the loader on one channel ----

TEST_CASE("loader: 1-channel 28x28 images augment, preprocess and batch as 3-channel ones do") {
  Dataset d = random_dataset(20, 10, 1, 28, 28);
  for (PreprocessMode m : {PreprocessMode::standard, PreprocessMode::vgg, PreprocessMode::inception}) {
    LoaderOptions o;
    o.batch_size = 8;
    o.augment = true;
    o.cutout = 6;
    o.preprocess = Preprocess::make(m, 1);
    o.output = BatchOutput::both;
    o.prefetch = 0;
    Loader loader(d, o);
    const Batch b = loader.make_batch(0, 1);
    CHECK(b.c == 1);
    CHECK(b.h == 28);
    CHECK(b.w == 28);
    CHECK(b.images.size() == 8u * 784u);
    CHECK(b.pixels.size() == 8u * 784u);
    for (size_t i = 0; i < b.pixels.size(); i += 97)
      CHECK(b.images[i] == float(b.pixels[i]) * o.preprocess.scale[0] + o.preprocess.offset[0]);
  }
  // A 3-channel preprocessing on 1-channel images is refused, naming both counts.
  LoaderOptions wrong;
  wrong.preprocess = Preprocess::standard();
  const std::string msg = error_of([&] { Loader l(d, wrong); });
  CHECK(msg.find("preprocessing has 3 channels, the images 1") != std::string::npos);
}
