// tests/apps/test_cli_data.cpp: data of any size and channel count through
// the `octet` command line (issue 27): a Fashion-MNIST-like IDX folder
// (28x28 gray, gzip-compressed, made here) and a tree of gray PNGs train
// models that take 28x28, 1 channel; the checkpoint records that shape, the
// exported model declares it, `octet eval` accepts the same data (engine ==
// integer simulation on every image) and refuses another shape naming both,
// and `octet run` never resizes without --resize.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <zlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/image.h"
#include "tests/apps/cli_util.h"
#include "tests/core/test_data_util.h"

using octet::testing::contains;
using octet::testing::octet_cli;
using octet::testing::quoted;
using octet::testing::Result;
using octet::testing::TempDir;
using octet::testing::write_bytes;
using octet::testing::write_tree;
namespace fs = std::filesystem;

namespace {

constexpr int kSide = 28;

// A 28x28 gray image of class k (0..9): a bright 7x7 square at a place of
// its own on a dim, noisy background; `i` varies the noise.
std::vector<uint8_t> gray_image(int k, int i) {
  std::vector<uint8_t> g(kSide * kSide);
  const int top = (k / 4) * 9 + 1, left = (k % 4) * 7;
  for (int y = 0; y < kSide; ++y)
    for (int x = 0; x < kSide; ++x) {
      const bool inside = y >= top && y < top + 7 && x >= left && x < left + 7;
      g[static_cast<size_t>(y * kSide + x)] = static_cast<uint8_t>((inside ? 200 : 20) + (i * 29 + y * 7 + x * 3) % 31);
    }
  return g;
}

void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

std::vector<uint8_t> gzip(const std::vector<uint8_t>& bytes) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, static_cast<uLong>(bytes.size())) + 64);
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// dir/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz: per_class images of
// each of the 10 classes in the train split, 3 per class in the test split.
void write_idx_folder(const std::string& dir, int per_class) {
  for (const bool train : {true, false}) {
    const int n = train ? per_class : 3;
    std::vector<uint8_t> images, labels;
    put_be32(images, 0x00000803);
    put_be32(images, static_cast<uint32_t>(10 * n));
    put_be32(images, kSide);
    put_be32(images, kSide);
    put_be32(labels, 0x00000801);
    put_be32(labels, static_cast<uint32_t>(10 * n));
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < 10; ++k) {
        const std::vector<uint8_t> g = gray_image(k, train ? i : 1000 + i);
        images.insert(images.end(), g.begin(), g.end());
        labels.push_back(static_cast<uint8_t>(k));
      }
    const std::string prefix = dir + (train ? "/train" : "/t10k");
    write_bytes(prefix + "-images-idx3-ubyte.gz", gzip(images));
    write_bytes(prefix + "-labels-idx1-ubyte.gz", gzip(labels));
  }
}

}  // namespace

TEST_CASE("cli: Fashion-MNIST IDX (.gz) -> train --qat -> export -> eval and run at 28x28, 1 channel") {
  TempDir tmp;
  const std::string data = tmp / "fashion-mini", run = tmp / "run", model = tmp / "model.oct";
  write_idx_folder(data, 12);

  const Result train = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 2 --batch 16 --lr 0.05 --threads 1 "
                                 "--no-progress --data " + quoted(data) + " --out " + quoted(run));
  INFO(train.output);
  REQUIRE(train.code == 0);
  CHECK(contains(train.output, "train 120 images, test 30 images, 10 classes, images 28x28 (1 channel)"));
  // The checkpoint records the shape.
  const octet::Checkpoint ck = octet::load_checkpoint(run + "/last.ckpt");
  CHECK(ck.get("input.channels") == "1");
  CHECK(ck.get("input.height") == "28");
  CHECK(ck.get("input.width") == "28");
  CHECK(contains(ck.get("class_names"), "T-shirt/top,Trouser"));

  const Result exported = octet_cli("export " + quoted(run + "/last.ckpt") + " -o " + quoted(model));
  INFO(exported.output);
  REQUIRE(exported.code == 0);

  // eval on the same data: the engine at 28x28x1, equal to the simulation on every image.
  const Result eval = octet_cli("eval " + quoted(model) + " --data " + quoted(data) + " --intsim --threads 1");
  INFO(eval.output);
  CHECK(eval.code == 0);
  CHECK(contains(eval.output, "engine == integer simulation (int8 logits, bit for bit): 30 of 30 images"));
  CHECK(contains(eval.output, "Ankle boot"));
  // ... and the checkpoint in float and in the engine (exported in memory) on it too.
  const Result eval_ck = octet_cli("eval " + quoted(run + "/last.ckpt") + " --mode engine --intsim --threads 1 --data " +
                                   quoted(data));
  INFO(eval_ck.output);
  CHECK(eval_ck.code == 0);
  CHECK(contains(eval_ck.output, "30 of 30 images"));

  // Data of another shape is refused, naming both: a 32x32 RGB tree.
  write_tree(tmp / "rgb32", 2);
  const Result other = octet_cli("eval " + quoted(model) + " --data " + quoted(tmp / "rgb32"));
  INFO(other.output);
  CHECK(other.code == 1);
  CHECK(contains(other.output, "image is 32x32, expected 28x28 (the input of " + model + ")"));

  // run: a 28x28 gray image as it is; another size only with --resize; a color one turned to gray, said so.
  octet::write_png(tmp / "g.png", gray_image(1, 5).data(), kSide, kSide, 1);
  octet::write_png(tmp / "big.png", std::vector<uint8_t>(32 * 32, 90).data(), 32, 32, 1);
  octet::write_png(tmp / "color.png", std::vector<uint8_t>(kSide * kSide * 3, 150).data(), kSide, kSide, 3);
  const Result ok = octet_cli("run " + quoted(model) + " " + quoted(tmp / "g.png") + " " + quoted(tmp / "color.png") +
                              " --top 1");
  INFO(ok.output);
  CHECK(ok.code == 0);
  CHECK(contains(ok.output, "input 28x28 (1 channel), 10 classes"));
  CHECK(contains(ok.output, "g.png: 28x28\n"));
  CHECK(contains(ok.output, "color.png: 28x28 (color, turned to gray: the model takes 1 channel)"));
  const Result big = octet_cli("run " + quoted(model) + " " + quoted(tmp / "big.png"));
  INFO(big.output);
  CHECK(big.code == 1);
  CHECK(contains(big.output, "the image is 32x32, the model takes 28x28 (1 channel) images"));
  const Result resized = octet_cli("run " + quoted(model) + " " + quoted(tmp / "big.png") + " --resize");
  INFO(resized.output);
  CHECK(resized.code == 0);
  CHECK(contains(resized.output, "big.png: 32x32 (resized to 28x28"));
}

TEST_CASE("cli: a class-folder tree of 28x28 gray PNGs trains a 1-channel model; PTQ + engine run at that shape") {
  TempDir tmp;
  const std::string data = tmp / "gray-tree", run = tmp / "run";
  const char* names[2] = {"coat", "sneaker"};
  for (int k = 0; k < 2; ++k)
    for (const char* split : {"train", "test"}) {
      fs::create_directories(data + "/" + split + "/" + names[k]);
      for (int i = 0; i < (split[1] == 'r' ? 24 : 4); ++i)
        octet::write_png(data + "/" + split + "/" + names[k] + "/" + std::to_string(i) + ".png",
                         gray_image(k * 5, (split[1] == 'r' ? 0 : 500) + i).data(), kSide, kSide, 1);
    }
  const Result train = octet_cli("train --preset quick --epochs 1 --batch 16 --threads 1 --no-progress --data " +
                                 quoted(data) + " --out " + quoted(run));
  INFO(train.output);
  REQUIRE(train.code == 0);
  CHECK(contains(train.output, "train 48 images, test 8 images, 2 classes, images 28x28 (1 channel)"));
  // The float checkpoint, PTQ-calibrated on the same tree and run in the engine at 28x28x1.
  const Result eval = octet_cli("eval " + quoted(run + "/last.ckpt") + " --mode engine --intsim --calib-images 32 "
                                "--threads 1 --data " + quoted(data));
  INFO(eval.output);
  CHECK(eval.code == 0);
  CHECK(contains(eval.output, "8 of 8 images"));
}
