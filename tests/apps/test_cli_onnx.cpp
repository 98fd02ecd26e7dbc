// tests/apps/test_cli_onnx.cpp: the ONNX path as a user runs it (issue 28): a
// tiny QAT model trained by `octet train`, exported by `octet export --onnx`
// (uint8 and int8 activations, the QDQ and integer forms, the float twin, and
// an .oct file converted), then run in ONNX Runtime by `octet eval MODEL.onnx
// --against MODEL.oct` and compared with the engine image by image; and the
// integer form of synthetic models that reach every branch of its
// arithmetic, run by scripts/ort_run.mjs against engine::Session. ONNX Runtime comes from npm
// (scripts/ort_setup.sh installs it into <build>/ort); without it, or without
// node, the suite is skipped and says why.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/npy.h"
#include "engine/builder.h"
#include "engine/engine.h"
#include "engine/samples.h"
#include "quant/onnx_export.h"
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

std::string ort_dir() {
  const char* env = std::getenv("OCTET_ORT_DIR");
  return env && *env ? env : kOrtDir;
}

void skip_without_ort() {
  const std::string dir = ort_dir();
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
  REQUIRE(octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "f32.onnx") + " --onnx-form float").code ==
          0);
  REQUIRE(octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "iu8.onnx") + " --onnx-form integer").code == 0);
  REQUIRE(octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "is8.onnx") +
                    " --onnx-form integer --onnx-activations int8")
              .code == 0);
  // Flags with a value out of their set are refused, naming the flag.
  const Result bad_form = octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "z.onnx") + " --onnx-form int");
  CHECK(bad_form.code == 2);
  CHECK(contains(bad_form.output, "--onnx-form must be qdq, integer or float, not 'int'"));
  const Result old_twin =
      octet_cli("export " + quoted(oct) + " --onnx " + quoted(tmp / "z.onnx") + " --onnx-activations float32");
  CHECK(old_twin.code == 2);
  CHECK(contains(old_twin.output, "the float twin is --onnx-form float"));
  CHECK_FALSE(fs::exists(tmp / "z.onnx"));
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

  // The integer form is the engine's arithmetic: every logit equal, on every image.
  for (const char* variant : {"iu8", "is8"}) {
    CAPTURE(variant);
    const std::string onnx = tmp / (std::string(variant) + ".onnx"), json = tmp / (std::string(variant) + ".json");
    const Result r = octet_cli("eval " + quoted(onnx) + " --data " + quoted(data) + " --against " + quoted(oct) +
                               " --threads 1 --json " + quoted(json));
    INFO(r.output);
    REQUIRE(r.code == 0);
    const nlohmann::json a = read_json(json)["against"];
    CHECK(a["same_top1"].get<int>() == 16);
    CHECK(a["equal_logits"].get<int>() == 16);
    CHECK(a["max_abs_diff_steps"].get<double>() == 0.0);  // DequantizeLinear of equal codes: equal floats
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

namespace {

// A model whose requantization reaches every branch of the integer form's
// MultiplyByQuantizedMultiplier: left shifts (M >= 1, with saturation to
// int32 before the high multiply), no shift, right shifts of 1 to 20 bits,
// a zero multiplier; negative and positive accumulators; clamps at both
// ends. Pixels near the zero point keep most outputs off the clamps.
octet::engine::ModelBuilder shifts_model() {
  using namespace octet::engine;
  ModelBuilder b("shifts");
  TensorId x = b.add_input("image", 4, 4, 3, 1.0 / 64, 128);
  Weights w;
  w.out_c = 7, w.in_c = 3, w.scales = {0.01};
  for (int i = 0; i < 7 * 3; ++i) w.values.push_back(static_cast<int8_t>((i * 5) % 9 - 4));
  w.values[20] = 127;  // channel 6: a large weight, for the int32 saturation of the left shift
  const std::vector<QuantizedMultiplier> m = {{(1 << 30) + 12345, 1}, {(1 << 30) + 777777, 0}, {2000000000, -1},
                                              {1234567891, -7},       {(1 << 30) + 1, -20},    {0, 0},
                                              {2147483647, 30}};
  x = b.add_conv("c1", x, w, {20, -20, 7, -300, 1 << 20, 5, 100}, {}, {0.05, 3}, Act::none, m);
  Weights f;
  f.out_c = 4, f.in_c = 4 * 4 * 7, f.scales = {0.02, 0.03, 0.04, 0.05};
  for (int i = 0; i < f.out_c * f.in_c; ++i) f.values.push_back(static_cast<int8_t>((i * 37) % 255 - 127));
  b.set_output(b.add_fc("fc", x, f, {-50, 0, 50, 1000}, {0.5, -3}));
  return b;
}

}  // namespace

TEST_CASE("onnx integer form: ONNX Runtime gives the engine's logits bit for bit (every op type, every shift)") {
  skip_without_ort();
  using namespace octet;
  TempDir tmp;
  engine::ResNetSpec small;
  small.blocks_per_stage = 1;
  small.width = 8;
  small.image = 16;
  struct Sample {
    std::string name;
    engine::ModelBuilder model;
  };
  std::vector<Sample> samples;
  samples.push_back({"tiny", engine::tiny_model(3)});  // every op type: depthwise, both pools, add, uint8 outputs
  samples.push_back({"tiny4", engine::tiny_model(4, 4)});
  samples.push_back({"resnet8", engine::random_resnet(small)});
  samples.push_back({"shifts", shifts_model()});

  for (const Sample& s : samples)
    for (engine::DType act : {engine::DType::uint8, engine::DType::int8}) {
      const std::string name = s.name + "_" + engine::dtype_name(act);
      CAPTURE(name);
      quant::OnnxOptions opt;
      opt.form = quant::OnnxForm::integer;
      opt.activations = act;
      const std::string onnx = tmp / (name + ".onnx"), in = tmp / (name + "_in.npy"), out = tmp / (name + "_out.npy");
      quant::write_onnx(onnx, s.model.desc(), opt);

      const auto model = engine::Model::from_bytes(engine::encode(s.model.desc()), name);
      const int batch = 24, hwc = static_cast<int>(model->input_bytes());
      std::mt19937 rng(7);
      // Half the images anywhere in [0, 255], half near the pixels' zero point.
      std::vector<uint8_t> pixels(static_cast<size_t>(batch) * hwc);
      for (size_t i = 0; i < pixels.size(); ++i)
        pixels[i] = static_cast<uint8_t>(i < pixels.size() / 2 ? rng() % 256 : 118 + rng() % 21);
      write_npy<uint8_t>(in, {batch, model->input_h(), model->input_w(), model->input_c()},
                         std::span<const uint8_t>(pixels));

      const octet::testing::ShellResult r = octet::testing::run_shell(
          "node " + quoted(std::string(OCTET_SOURCE_DIR) + "/scripts/ort_run.mjs") + " run " + quoted(onnx) + " " +
          quoted(in) + " " + quoted(out) + " --ort-dir " + quoted(ort_dir()) + " 2>&1");
      INFO(r.out);
      REQUIRE(r.code == 0);
      const NpyArray<float> got = read_npy<float>(out);
      REQUIRE(got.shape == std::vector<int64_t>{batch, model->num_classes()});

      engine::Session session(model, batch);
      const std::span<const int8_t> want = session.run(pixels.data(), batch);
      const engine::TensorDesc& y = s.model.desc().tensors[s.model.desc().output];
      int equal = 0, saturated = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        // ORT's logits are DequantizeLinear of the output codes: (q - zp) * scale in float32.
        const float expect = static_cast<float>(want[i] - y.zero_point) * static_cast<float>(y.scale);
        equal += got.data[i] == expect;
        saturated += want[i] == -128 || want[i] == 127;
      }
      CHECK(equal == static_cast<int>(want.size()));
      // The samples are not degenerate: most logits are off the clamps.
      CHECK(saturated < static_cast<int>(want.size()) / 2);
    }
}
