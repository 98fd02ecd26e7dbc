// Datasets: CIFAR-10 binary batches and class-per-folder image trees, every
// malformed input (each error must name the file), data path resolution, and
// the image I/O they rest on (decode, resize, atomic PNG writing).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <stdlib.h>

#include <filesystem>

#include "core/dataset.h"
#include "core/image.h"
#include "tests/core/test_data_util.h"

using namespace octet;
using namespace octet::testing;
namespace fs = std::filesystem;

namespace {

// A complete small binary distribution in dir: 5 train files of 2 records, a
// test file of 3, optionally a meta file.
void write_cifar_binary(const std::string& dir, bool meta = true) {
  for (int i = 1; i <= 5; ++i)
    write_bytes(dir + "/data_batch_" + std::to_string(i) + ".bin", cifar_records(2, 2 * (i - 1), 2 * (i - 1)));
  write_bytes(dir + "/test_batch.bin", cifar_records(3, 7, 100));
  if (meta) write_text(dir + "/batches.meta.txt", "c0\nc1\nc2\nc3\nc4\nc5\nc6\nc7\nc8\nc9\n\n");
}

Image pattern_image(int w, int h, int seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.pixels.push_back(uint8_t((seed * 31 + y * 5 + x * 3 + c * 70) & 255));
  return img;
}

// write_png into a folder that may not exist yet.
void put_png(const std::string& path, const Image& img) {
  fs::create_directories(fs::path(path).parent_path());
  write_png(path, img);
}

LoadOptions small_files() {
  LoadOptions o;
  o.records_per_file = 0;
  return o;
}

}  // namespace

// ---- CIFAR-10 binary ----

TEST_CASE("CIFAR-10 binary: pixels land in the right channel and position, labels and names are read") {
  TempDir tmp;
  write_cifar_binary(tmp / "bin");
  Dataset train = load_cifar10_binary(tmp / "bin", Split::train, small_files());
  REQUIRE(train.size() == 10);
  CHECK(train.channels == 3);
  CHECK(train.height == 32);
  CHECK(train.width == 32);
  CHECK(train.class_names == std::vector<std::string>{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"});
  for (int64_t r = 0; r < train.size(); ++r) {
    CHECK(train.labels[size_t(r)] == int(r % 10));  // files in order 1..5, records in order
    const uint8_t* img = train.image(r);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x)
          if (img[c * 1024 + y * 32 + x] != cifar_pixel(r, c, y, x)) {
            FAIL("record " << r << " pixel (" << c << ", " << y << ", " << x << ") is wrong");
          }
  }
  Dataset test = load_cifar10_binary(tmp / "bin", Split::test, small_files());
  REQUIRE(test.size() == 3);
  CHECK(test.labels == std::vector<int>{7, 8, 9});
  CHECK(test.image(2)[2 * 1024 + 31 * 32 + 31] == cifar_pixel(102, 2, 31, 31));
}

TEST_CASE("CIFAR-10 binary: auto-detected directly and in cifar-10-batches-bin/") {
  TempDir tmp;
  write_cifar_binary(tmp / "a");
  write_cifar_binary(tmp / "b/cifar-10-batches-bin");
  std::string dir;
  CHECK(detect_format(tmp / "a", &dir) == DataFormat::cifar_binary);
  CHECK(dir == tmp / "a");
  CHECK(detect_format(tmp / "b", &dir) == DataFormat::cifar_binary);
  CHECK(dir == (fs::path(tmp / "b") / "cifar-10-batches-bin").string());
  Dataset d = load_dataset(tmp / "b", Split::test, small_files());
  CHECK(d.size() == 3);
}

TEST_CASE("CIFAR-10 binary: a missing batches.meta.txt falls back to the standard names") {
  TempDir tmp;
  write_cifar_binary(tmp / "bin", /*meta=*/false);
  Dataset d = load_cifar10_binary(tmp / "bin", Split::test, small_files());
  CHECK(d.class_names == cifar10_class_names());
  CHECK(d.class_names.front() == "airplane");
  CHECK(d.class_names.back() == "truck");
}

TEST_CASE("CIFAR-10 binary: the official record count (10,000 per file) is enforced by default") {
  TempDir tmp;
  write_cifar_binary(tmp / "bin");
  const std::string file = tmp / "bin/test_batch.bin";
  std::string msg = error_of([&] { load_cifar10_binary(tmp / "bin", Split::test); });
  CHECK(msg.find(file) != std::string::npos);
  CHECK(msg.find("3 records, expected 10000") != std::string::npos);
  // A genuine 10,000-record file passes.
  write_bytes(file, cifar_records(10000));
  Dataset d = load_cifar10_binary(tmp / "bin", Split::test);
  CHECK(d.size() == 10000);
  CHECK(d.class_counts() == std::vector<int64_t>(10, 1000));
}

TEST_CASE("CIFAR-10 binary: malformed files are rejected with the file's name") {
  TempDir tmp;
  const std::string dir = tmp / "bin";
  write_cifar_binary(dir);

  SUBCASE("size not a multiple of 3073") {
    std::vector<uint8_t> bytes = cifar_records(2);
    bytes.pop_back();
    write_bytes(dir + "/data_batch_4.bin", bytes);
    std::string msg = error_of([&] { load_cifar10_binary(dir, Split::train, small_files()); });
    CHECK(msg.find(dir + "/data_batch_4.bin") != std::string::npos);
    CHECK(msg.find("6145 bytes") != std::string::npos);
  }
  SUBCASE("empty file") {
    write_bytes(dir + "/test_batch.bin", {});
    std::string msg = error_of([&] { load_cifar10_binary(dir, Split::test, small_files()); });
    CHECK(msg.find(dir + "/test_batch.bin") != std::string::npos);
  }
  SUBCASE("label out of range") {
    std::vector<uint8_t> bytes = cifar_records(3);
    bytes[2 * 3073] = 10;  // label byte of record 2
    write_bytes(dir + "/data_batch_2.bin", bytes);
    std::string msg = error_of([&] { load_cifar10_binary(dir, Split::train, small_files()); });
    CHECK(msg.find(dir + "/data_batch_2.bin") != std::string::npos);
    CHECK(msg.find("record 2") != std::string::npos);
    CHECK(msg.find("label 10") != std::string::npos);
  }
  SUBCASE("missing batch file") {
    fs::remove(dir + "/data_batch_3.bin");
    std::string msg = error_of([&] { load_cifar10_binary(dir, Split::train, small_files()); });
    CHECK(msg.find(dir + "/data_batch_3.bin") != std::string::npos);
    CHECK(msg.find("missing") != std::string::npos);
  }
  SUBCASE("meta file with the wrong number of names") {
    write_text(dir + "/batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\n");
    std::string msg = error_of([&] { load_cifar10_binary(dir, Split::test, small_files()); });
    CHECK(msg.find(dir + "/batches.meta.txt") != std::string::npos);
    CHECK(msg.find("9 class names") != std::string::npos);
  }
  SUBCASE("a size other than 32x32 asked for") {
    LoadOptions o = small_files();
    o.height = o.width = 64;
    std::string msg = error_of([&] { load_cifar10_binary(dir, Split::test, o); });
    CHECK(msg.find(dir) != std::string::npos);
    CHECK(msg.find("32x32") != std::string::npos);
  }
}

// ---- image trees ----

TEST_CASE("image tree: PNG round trip, class ids are sorted folder names, files in name order") {
  TempDir tmp;
  const std::string root = tmp / "tree";
  // Classes created out of order; file names whose numeric and byte orders differ.
  const std::vector<std::string> classes = {"zebra", "ant", "moth"};
  const std::vector<std::string> names = {"2.png", "10.png", "1.png"};
  for (size_t c = 0; c < classes.size(); ++c)
    for (size_t f = 0; f < names.size(); ++f)
      put_png(root + "/train/" + classes[c] + "/" + names[f], pattern_image(8, 6, int(c * 10 + f)));
  write_text(root + "/train/ant/README.txt", "not an image: ignored");

  std::string dir;
  REQUIRE(detect_format(root, &dir) == DataFormat::image_folder);
  Dataset d = load_dataset(root, Split::train);
  CHECK(d.class_names == std::vector<std::string>{"ant", "moth", "zebra"});
  REQUIRE(d.size() == 9);
  CHECK(d.height == 6);
  CHECK(d.width == 8);
  CHECK(d.labels == std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2, 2});
  CHECK(d.class_counts() == std::vector<int64_t>{3, 3, 3});
  // Sorted by name: "1.png" (f=2), "10.png" (f=1), "2.png" (f=0).
  const int file_of_pos[3] = {2, 1, 0};
  const int class_of_label[3] = {1, 2, 0};  // ant was written second, moth third, zebra first
  for (int64_t i = 0; i < d.size(); ++i) {
    Image want = pattern_image(8, 6, class_of_label[d.labels[size_t(i)]] * 10 + file_of_pos[i % 3]);
    std::vector<uint8_t> chw(want.pixels.size());
    hwc_to_chw(want.pixels.data(), chw.data(), 6, 8, 3);
    CHECK(std::equal(chw.begin(), chw.end(), d.image(i)));
  }
}

TEST_CASE("image tree: JPEG and gray PNG files decode to RGB") {
  TempDir tmp;
  const std::string root = tmp / "tree";
  fs::create_directories(root + "/test/cat");
  fs::create_directories(root + "/test/dog");
  // A flat color survives JPEG almost exactly.
  std::vector<uint8_t> flat(16 * 16 * 3);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = uint8_t(i % 3 == 0 ? 200 : i % 3 == 1 ? 100 : 50);
  REQUIRE(stbi_write_jpg((root + "/test/cat/a.JPG").c_str(), 16, 16, 3, flat.data(), 95));
  REQUIRE(stbi_write_jpg((root + "/test/cat/b.jpeg").c_str(), 16, 16, 3, flat.data(), 95));
  std::vector<uint8_t> gray(16 * 16, 77);
  REQUIRE(stbi_write_png((root + "/test/dog/g.png").c_str(), 16, 16, 1, gray.data(), 16));
  Dataset d = load_image_folder(root, "test");
  REQUIRE(d.size() == 3);
  for (int c = 0; c < 3; ++c) {
    int want = c == 0 ? 200 : c == 1 ? 100 : 50;
    CHECK(std::abs(int(d.image(0)[c * 256 + 5 * 16 + 7]) - want) <= 3);
    CHECK(d.image(2)[c * 256 + 40] == 77);
  }
}

TEST_CASE("image tree: sizes must agree, or match the size asked for, unless resizing is on") {
  TempDir tmp;
  const std::string root = tmp / "tree";
  put_png(root + "/train/a/0.png", pattern_image(32, 32, 1));
  put_png(root + "/train/a/1.png", pattern_image(32, 32, 2));
  put_png(root + "/train/b/0.png", pattern_image(40, 30, 3));
  const std::string odd = root + "/train/b/0.png";

  std::string msg = error_of([&] { load_image_folder(root, "train"); });
  CHECK(msg.find(odd) != std::string::npos);
  CHECK(msg.find("40x30") != std::string::npos);
  CHECK(msg.find("expected 32x32") != std::string::npos);

  LoadOptions want32;
  want32.height = want32.width = 32;
  msg = error_of([&] { load_image_folder(root, "train", want32); });
  CHECK(msg.find(odd) != std::string::npos);

  LoadOptions fit = want32;
  fit.resize = true;
  Dataset d = load_image_folder(root, "train", fit);
  CHECK(d.size() == 3);
  CHECK(d.height == 32);
  CHECK(d.width == 32);

  // All images 40x30 but 32x32 asked for: the first file is named.
  put_png(root + "/test/a/0.png", pattern_image(40, 30, 1));
  msg = error_of([&] { load_image_folder(root, "test", want32); });
  CHECK(msg.find(root + "/test/a/0.png") != std::string::npos);
}

TEST_CASE("image tree: malformed trees are rejected with the file or folder's name") {
  TempDir tmp;
  const std::string root = tmp / "tree";
  put_png(root + "/train/a/0.png", pattern_image(8, 8, 1));
  put_png(root + "/train/b/0.png", pattern_image(8, 8, 2));

  SUBCASE("corrupt image") {
    write_text(root + "/train/b/1.jpg", "this is not a JPEG file at all");
    std::string msg = error_of([&] { load_image_folder(root, "train"); });
    CHECK(msg.find(root + "/train/b/1.jpg") != std::string::npos);
    CHECK(msg.find("cannot decode") != std::string::npos);
  }
  SUBCASE("truncated PNG") {
    std::vector<uint8_t> bytes = read_file_bytes(root + "/train/a/0.png");
    bytes.resize(bytes.size() / 2);
    write_bytes(root + "/train/a/1.png", bytes);
    std::string msg = error_of([&] { load_image_folder(root, "train"); });
    CHECK(msg.find(root + "/train/a/1.png") != std::string::npos);
  }
  SUBCASE("empty image file") {
    write_bytes(root + "/train/a/2.png", {});
    std::string msg = error_of([&] { load_image_folder(root, "train"); });
    CHECK(msg.find(root + "/train/a/2.png") != std::string::npos);
    CHECK(msg.find("empty") != std::string::npos);
  }
  SUBCASE("of several bad files the first in order is named") {
    write_text(root + "/train/b/5.png", "junk");
    write_text(root + "/train/a/5.png", "junk");
    std::string msg = error_of([&] { load_image_folder(root, "train"); });
    CHECK(msg.find(root + "/train/a/5.png") != std::string::npos);
  }
  SUBCASE("missing split folder") {
    std::string msg = error_of([&] { load_image_folder(root, "test"); });
    CHECK(msg.find((fs::path(root) / "test").string()) != std::string::npos);
    CHECK(msg.find("missing folder") != std::string::npos);
  }
  SUBCASE("empty class folder") {
    fs::create_directories(root + "/train/c");
    write_text(root + "/train/c/notes.txt", "no images here");
    std::string msg = error_of([&] { load_image_folder(root, "train"); });
    CHECK(msg.find((fs::path(root) / "train" / "c").string()) != std::string::npos);
    CHECK(msg.find("empty class folder") != std::string::npos);
  }
  SUBCASE("no class folders") {
    fs::create_directories(root + "/test");
    put_png(root + "/test/loose.png", pattern_image(8, 8, 1));
    std::string msg = error_of([&] { load_image_folder(root, "test"); });
    CHECK(msg.find((fs::path(root) / "test").string()) != std::string::npos);
    CHECK(msg.find("no class folders") != std::string::npos);
  }
}

// ---- locating the data ----

TEST_CASE("detect_format: a folder with neither layout, or no folder, is named") {
  TempDir tmp;
  fs::create_directories(tmp / "empty");
  std::string msg = error_of([&] { detect_format(tmp / "empty"); });
  CHECK(msg.find(tmp / "empty") != std::string::npos);
  CHECK(msg.find("data_batch_1.bin") != std::string::npos);
  msg = error_of([&] { load_dataset(tmp / "nope", Split::train); });
  CHECK(msg.find(tmp / "nope") != std::string::npos);
}

TEST_CASE("resolve_data_path: explicit path, then OCTET_DATA, else an explanation") {
  TempDir tmp;
  const char* old = std::getenv("OCTET_DATA");
  const std::string saved = old ? old : "";
  ::unsetenv("OCTET_DATA");

  CHECK(resolve_data_path(tmp.path().string()) == tmp.path().string());
  std::string msg = error_of([&] { resolve_data_path(tmp / "missing"); });
  CHECK(msg.find(tmp / "missing") != std::string::npos);

  msg = error_of([&] { resolve_data_path(""); });
  CHECK(msg.find("no internet") != std::string::npos);
  CHECK(msg.find("OCTET_DATA") != std::string::npos);
  CHECK(msg.find("--data") != std::string::npos);
  CHECK(msg.find("cifar10-jpg.tar.gz") != std::string::npos);

  ::setenv("OCTET_DATA", tmp.path().c_str(), 1);
  CHECK(resolve_data_path("") == tmp.path().string());
  CHECK(resolve_data_path(tmp / "..") == tmp / "..");  // explicit wins
  ::setenv("OCTET_DATA", (tmp / "gone").c_str(), 1);
  msg = error_of([&] { resolve_data_path(""); });
  CHECK(msg.find("OCTET_DATA=" + (tmp / "gone")) != std::string::npos);

  if (old)
    ::setenv("OCTET_DATA", saved.c_str(), 1);
  else
    ::unsetenv("OCTET_DATA");
}

// ---- image I/O ----

TEST_CASE("write_png is atomic and round-trips; errors name the path") {
  TempDir tmp;
  Image img = pattern_image(13, 7, 5);
  const std::string path = tmp / "out.png";
  write_png(path, img);
  for (const auto& e : fs::directory_iterator(tmp.path()))
    CHECK(e.path().filename().string() == "out.png");  // no temp file left behind
  Image back = load_image(path);
  CHECK(back.width == 13);
  CHECK(back.height == 7);
  CHECK(back.pixels == img.pixels);
  write_png(path, pattern_image(4, 4, 1));  // replaces
  CHECK(load_image(path).width == 4);

  std::string msg = error_of([&] { write_png(tmp / "no/such/dir/x.png", img); });
  CHECK(msg.find(tmp / "no/such/dir/x.png") != std::string::npos);
  msg = error_of([&] { load_image(tmp / "absent.png"); });
  CHECK(msg.find(tmp / "absent.png") != std::string::npos);
}

TEST_CASE("resize: area averages covered pixels, bilinear keeps flat images flat, resize_to flags") {
  Image img;
  img.width = 4;
  img.height = 2;
  img.channels = 1;
  img.pixels = {0, 10, 20, 30, 40, 50, 60, 70};
  Image half = resize(img, 2, 1, ResizeFilter::area);
  CHECK(half.pixels == std::vector<uint8_t>{25, 45});  // (0+10+40+50)/4, (20+30+60+70)/4
  Image third = resize(img, 3, 2, ResizeFilter::area);  // covers 4/3 input pixels each
  CHECK(third.pixels[0] == 3);                           // (0*1 + 10*1/3) / (4/3) = 2.5 -> 3 (rounded half up)
  CHECK(third.pixels[2] == 28);                          // (20*1/3 + 30*1) / (4/3) = 27.5 -> 28

  Image flat = pattern_image(5, 5, 0);
  for (auto& v : flat.pixels) v = 123;
  Image up = resize(flat, 17, 9, ResizeFilter::bilinear);
  CHECK(up.width == 17);
  CHECK(up.height == 9);
  CHECK(std::all_of(up.pixels.begin(), up.pixels.end(), [](uint8_t v) { return v == 123; }));
  // Bilinear doubling of a 2-pixel ramp: centres at 1/4 and 3/4 of the way.
  Image ramp;
  ramp.width = 2;
  ramp.height = 1;
  ramp.channels = 1;
  ramp.pixels = {0, 100};
  CHECK(resize(ramp, 4, 1, ResizeFilter::bilinear).pixels == std::vector<uint8_t>{0, 25, 75, 100});

  bool resized = true;
  Image same = resize_to(flat, 5, 5, resized);
  CHECK_FALSE(resized);
  CHECK(same.pixels == flat.pixels);
  Image small = resize_to(flat, 32, 32, resized);
  CHECK(resized);
  CHECK(small.width == 32);
  CHECK(error_of([&] { resize(flat, 0, 3); }).find("positive") != std::string::npos);
}

TEST_CASE("hwc_to_chw and chw_to_hwc are inverse layouts") {
  Image img = pattern_image(3, 2, 9);
  std::vector<uint8_t> chw(img.pixels.size()), hwc(img.pixels.size());
  hwc_to_chw(img.pixels.data(), chw.data(), 2, 3, 3);
  CHECK(chw[1 * 6 + 1 * 3 + 2] == img.at(1, 2, 1));  // channel 1, y 1, x 2
  chw_to_hwc(chw.data(), hwc.data(), 2, 3, 3);
  CHECK(hwc == img.pixels);
}
