// tests/apps/test_cli_onnx.cpp: the ONNX path as a user runs it (issue 28): a
// tiny QAT model trained by `octet train`, exported by `octet export --onnx`
// (uint8 and int8 activations, the float twin, and an .oct file converted),
// then run in ONNX Runtime by `octet eval MODEL.onnx --against MODEL.oct` and
// compared with the engine image by image. ONNX Runtime comes from npm
// (scripts/ort_setup.sh installs it into <build>/ort); without it, or without
// node, the suite is skipped and says why.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/apps/cli_util.h"
#include "tests/core/test_data_util.h"
#include "tests/shell.h"
#include "tests/skip.h"

using octet::testing::contains;
using octet::testing::octet_cli;
using octet::testing::quoted;
using octet::testing::Result;
using octet::testing::TempDir;
using octet::testing::write_tree;
namespace fs = std::filesystem;

namespace {

// Where `octet eval MODEL.onnx` looks for ONNX Runtime by default.
const std::string kOrtDir = std::string(OCTET_BINARY_DIR) + "/ort";

void skip_without_ort() {
  const char* env = std::getenv("OCTET_ORT_DIR");
  const std::string dir = env && *env ? env : kOrtDir;
  if (!fs::exists(dir + "/node_modules/onnxruntime-node/package.json"))
    octet::testing::skip_suite("no ONNX Runtime at " + dir + " (scripts/ort_setup.sh installs onnxruntime-node there)");
  if (octet::testing::run_shell("command -v node >/dev/null 2>&1").code != 0)
    octet::testing::skip_suite("node is not on PATH (ONNX Runtime runs in Node.js)");
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f, "no JSON written at " << path);
  return nlohmann::json::parse(f);
}

}  // namespace

TEST_CASE("cli: train --qat -> export --onnx -> eval MODEL.onnx --against MODEL.oct in ONNX Runtime") {
  skip_without_ort();
  TempDir tmp;
  const std::string data = tmp / "tree", run = tmp / "run", oct = tmp / "model.oct";
  write_tree(data, 48);
  const Result train = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 2 --batch 16 --lr 0.05 --threads 1 "
                                 "--no-progress --data " + quoted(data) + " --out " + quoted(run));
  INFO(train.output);
  REQUIRE(train.code == 0);

  // One export, both files; the int8 variant and the float twin converted from the .oct file.
  const Result exp = octet_cli("export " + quoted(run + "/last.ckpt") + " -o " + quoted(oct) + " --onnx " +
                               quoted(tmp / "u8.onnx"));
  INFO(exp.output);
  REQUIRE(exp.code == 0);
  CHECK(contains(exp.output, "wrote " + tmp / "u8.onnx"));
  REQUIRE(octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "s8.onnx") + " --onnx-activations int8").code == 0);
  REQUIRE(octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "f32.onnx") + " --onnx-activations float32").code ==
          0);
  // Converting a model file writes ONNX only.
  const Result both = octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "x.onnx") + " -o " + quoted(tmp / "y.oct"));
  CHECK(both.code == 2);
  CHECK(contains(both.output, "is a model file already"));

  // The engine's own figures, from `octet eval MODEL.oct`: what --against must report.
  REQUIRE(octet_cli("eval " + quoted(oct) + " --data " + quoted(data) + " --threads 1 --json " + quoted(tmp / "oct.json"))
              .code == 0);
  const nlohmann::json engine = read_json(tmp / "oct.json");

  for (const char* variant : {"u8", "s8"}) {
    CAPTURE(variant);
    const std::string onnx = tmp / (std::string(variant) + ".onnx"), json = tmp / (std::string(variant) + ".json");
    const Result r = octet_cli("eval " + quoted(onnx) + " --data " + quoted(data) + " --against " + quoted(oct) +
                               " --threads 1 --ort-precise --json " + quoted(json));
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(contains(r.output, "same top-1 class:"));
    const nlohmann::json j = read_json(json);
    CHECK(j["images"].get<int>() == 16);  // the tree's test split: 8 images of each class
    const nlohmann::json& a = j["against"];
    // The engine side is the engine: the same top-1 as `octet eval MODEL.oct`.
    CHECK(a["top1"].get<double>() == doctest::Approx(engine["top1"].get<double>()));
    // The same integer model in another runtime: a step apart at most here
    // (docs/quantization.md section 16), so the same class on nearly every image.
    CHECK(a["max_abs_diff_steps"].get<double>() <= 4.0);
    CHECK(a["same_top1"].get<int>() >= 15);
    CHECK(std::abs(j["top1"].get<double>() - engine["top1"].get<double>()) <= 1.0 / 16 + 1e-9);
  }

  // The float twin runs in ONNX Runtime too (no grids: close, not equal).
  const Result twin = octet_cli("eval " + quoted(tmp / "f32.onnx") + " --data " + quoted(data) + " --threads 1");
  INFO(twin.output);
  CHECK(twin.code == 0);
  CHECK(contains(twin.output, "top1"));

  // Errors that name what is wrong: no runtime where pointed, an ONNX file that is not one.
  const Result no_ort = octet_cli("eval " + quoted(tmp / "u8.onnx") + " --data " + quoted(data) + " --ort-dir " +
                                  quoted(tmp / "nowhere"));
  CHECK(no_ort.code == 1);
  CHECK(contains(no_ort.output, "ONNX Runtime not found at " + tmp / "nowhere"));
  {
    std::ofstream bad(tmp / "bad.onnx");
    bad << "not a protobuf";
  }
  const Result bad = octet_cli("eval " + quoted(tmp / "bad.onnx") + " --data " + quoted(data));
  CHECK(bad.code == 1);
  CHECK(contains(bad.output, "bad.onnx"));
}
