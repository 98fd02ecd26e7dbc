#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/checkpoint.h"

using namespace octet;
namespace fs = std::filesystem;

namespace {

Checkpoint sample() {
  Checkpoint ck;
  ck.meta["model"] = "resnet20";
  ck.meta["epoch"] = "3";
  ck.meta["empty"] = "";
  ck.tensors.emplace_back("conv.weight", Tensor::from({2, 1, 1, 2}, std::vector<float>{1.5f, -2.0f, 3.25f, 1e-30f}));
  ck.tensors.emplace_back("scalar", Tensor::scalar(7.0f));
  ck.tensors.emplace_back("none", Tensor::zeros({0, 3}));
  return ck;
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("octet_test_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

}  // namespace

TEST_CASE("crc32 is the IEEE/zlib CRC") {
  const char* s = "123456789";
  CHECK(crc32(s, 9) == 0xCBF43926u);  // the standard check value
}

TEST_CASE("round trip through a file") {
  fs::path d = temp_dir("rt");
  const std::string path = (d / "a.ckpt").string();
  save_checkpoint(path, sample());
  Checkpoint ck = load_checkpoint(path);
  CHECK(ck.meta.size() == 3);
  CHECK(ck.get("model") == "resnet20");
  CHECK(ck.get("empty").empty());
  CHECK(ck.get("missing", "x") == "x");
  REQUIRE(ck.tensors.size() == 3);
  CHECK(ck.tensors[0].first == "conv.weight");
  CHECK(ck.tensor("conv.weight").shape() == Shape{2, 1, 1, 2});
  CHECK(ck.tensor("conv.weight").data()[2] == 3.25f);
  CHECK(ck.tensor("conv.weight").data()[3] == 1e-30f);
  CHECK(ck.tensor("scalar").item() == 7.0f);
  CHECK(ck.tensor("none").numel() == 0);
  CHECK_THROWS_WITH_AS(ck.tensor("nope"), doctest::Contains("a.ckpt: no tensor named 'nope'"), std::runtime_error);
  // Atomic write leaves no temp file behind, and overwriting works.
  save_checkpoint(path, sample());
  int files = 0;
  for (auto& e : fs::directory_iterator(d)) files += e.is_regular_file();
  CHECK(files == 1);
  fs::remove_all(d);
}

TEST_CASE("every truncation and every flipped byte is reported") {
  const std::vector<uint8_t> good = encode_checkpoint(sample());
  CHECK_NOTHROW(decode_checkpoint(good, "mem"));
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + std::ptrdiff_t(n));
    CAPTURE(n);
    CHECK_THROWS_AS(decode_checkpoint(cut, "cut.ckpt"), std::runtime_error);
  }
  for (size_t i = 0; i < good.size(); ++i) {
    std::vector<uint8_t> bad = good;
    bad[i] ^= 0x10;
    CAPTURE(i);
    CHECK_THROWS_AS(decode_checkpoint(bad, "flip.ckpt"), std::runtime_error);
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  CHECK_THROWS_AS(decode_checkpoint(longer, "long.ckpt"), std::runtime_error);
}

TEST_CASE("errors name the file and the field") {
  fs::path d = temp_dir("err");
  std::vector<uint8_t> good = encode_checkpoint(sample());

  std::vector<uint8_t> magic = good;
  magic[0] = 'X';
  write_bytes(d / "magic.ckpt", magic);
  CHECK_THROWS_WITH_AS(load_checkpoint((d / "magic.ckpt").string()), doctest::Contains("magic.ckpt: bad magic"),
                       std::runtime_error);

  std::vector<uint8_t> version = good;
  version[8] = 2;
  write_bytes(d / "version.ckpt", version);
  CHECK_THROWS_WITH_AS(load_checkpoint((d / "version.ckpt").string()), doctest::Contains("version 2"),
                       std::runtime_error);

  std::vector<uint8_t> cut(good.begin(), good.end() - 9);
  write_bytes(d / "cut.ckpt", cut);
  CHECK_THROWS_WITH_AS(load_checkpoint((d / "cut.ckpt").string()), doctest::Contains("cut.ckpt"), std::runtime_error);

  // A valid CRC over a body whose tensor length lies: the field is named.
  Checkpoint one;
  one.tensors.emplace_back("w", Tensor::zeros({2}));
  std::vector<uint8_t> lie = encode_checkpoint(one);
  lie.resize(lie.size() - 4);
  // body: magic 8, version 4, counts 8, name_len 4 + "w", ndim 4, dim 8 -> dim at offset 29
  lie[29] = 3;  // claims 3 floats, has 2
  const uint32_t crc = crc32(lie.data(), lie.size());
  for (int i = 0; i < 4; ++i) lie.push_back(uint8_t(crc >> (8 * i)));
  CHECK_THROWS_WITH_AS(decode_checkpoint(lie, "lie.ckpt"), doctest::Contains("tensor 'w' data"), std::runtime_error);

  CHECK_THROWS_WITH_AS(load_checkpoint((d / "absent.ckpt").string()), doctest::Contains("absent.ckpt"),
                       std::runtime_error);
  CHECK_THROWS_AS(save_checkpoint((d / "no" / "such" / "dir.ckpt").string(), sample()), std::runtime_error);
  fs::remove_all(d);
}
