// The ONNX exporter's files (quant/onnx_export.h) pass the onnx package's own
// checker, onnx.checker.check_model(path, full_check=True): the schema of
// every op and attribute, the types, and strict shape inference through the
// whole graph. The models: the engine's samples (engine/samples.h: every op
// type, uint8 and int8 tensors, ReLU, ReLU6, 4-bit weights, a small ResNet),
// each in the QDQ and integer forms with uint8 and with int8 activations,
// and as the float twin.
//
// It needs python3 with the onnx package (Debian: python3-onnx); without them
// the suite is skipped (tests/skip.h, exit 77), never passed. Field-by-field
// checks of the same exporter are in tests/quant/test_onnx_export.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/builder.h"
#include "engine/samples.h"
#include "quant/onnx_export.h"
#include "tests/shell.h"
#include "tests/skip.h"

using namespace octet;
namespace fs = std::filesystem;

namespace {

using Result = octet::testing::ShellResult;
// Runs a shell command; its exit code and its output (stdout and stderr).
Result sh(const std::string& cmd) { return octet::testing::run_shell(cmd + " 2>&1"); }

std::string quoted(const std::string& s) { return "'" + s + "'"; }  // paths of our own temp dir: no quotes in them

// The python3 that has onnx: $OCTET_PYTHON, else python3 on PATH, else
// /usr/bin/python3 (a pyenv or venv python3 first on PATH may lack Debian's
// python3-onnx). "" when none has it.
std::string python_with_onnx() {
  std::vector<std::string> candidates;
  if (const char* p = std::getenv("OCTET_PYTHON"); p && *p) candidates.emplace_back(p);
  candidates.emplace_back("python3");
  candidates.emplace_back("/usr/bin/python3");
  for (const std::string& py : candidates)
    if (std::system((py + " -c 'import onnx' >/dev/null 2>&1").c_str()) == 0) return py;
  return "";
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("octet_onnx_checker_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

// Checks every file named on its command line; prints one line per file and
// exits non-zero on the first model the checker refuses.
const char* kCheckScript = R"(import sys
import onnx
import onnx.checker
for path in sys.argv[1:]:
    model = onnx.load(path)
    onnx.checker.check_model(path, full_check=True)
    print("ok", path, "onnx", onnx.__version__, "opset", [o.version for o in model.opset_import])
)";

}  // namespace

TEST_CASE("onnx.checker.check_model(full_check=True) accepts every exported model") {
  const std::string py = python_with_onnx();
  if (py.empty()) testing::skip_suite("no python3 with the onnx package (Debian: python3-onnx; or set OCTET_PYTHON)");

  TempDir dir;
  struct Sample {
    std::string name;
    engine::ModelBuilder model;
  };
  engine::ResNetSpec small;
  small.blocks_per_stage = 1;
  small.width = 8;
  engine::ResNetSpec small4 = small;
  small4.bits = 4;
  std::vector<Sample> samples;
  samples.push_back({"tiny", engine::tiny_model(1)});
  samples.push_back({"tiny4", engine::tiny_model(2, 4)});
  samples.push_back({"resnet8", engine::random_resnet(small)});
  samples.push_back({"resnet8_w4", engine::random_resnet(small4)});

  std::string files;
  size_t written = 0;
  for (const Sample& s : samples)
    for (quant::OnnxForm form : {quant::OnnxForm::qdq, quant::OnnxForm::integer, quant::OnnxForm::float_twin})
      for (engine::DType act : {engine::DType::uint8, engine::DType::int8}) {
        if (form == quant::OnnxForm::float_twin && act == engine::DType::int8) continue;  // no codes to type
        quant::OnnxOptions opt;
        opt.form = form;
        opt.activations = act;
        opt.producer_version = "test";
        const std::string path = (dir.path / (s.name + "_" + quant::onnx_form_name(form) + "_" +
                                              engine::dtype_name(act) + ".onnx")).string();
        CHECK(quant::write_onnx(path, s.model.desc(), opt) > 0);
        files += " " + quoted(path);
        ++written;
      }
  const std::string script = (dir.path / "check.py").string();
  std::ofstream(script) << kCheckScript;

  const Result r = sh(py + " " + quoted(script) + files);
  INFO("checker output:\n" << r.out);
  CHECK(r.code == 0);
  size_t ok = 0;
  for (size_t at = 0; (at = r.out.find("ok ", at)) != std::string::npos; at += 3) ++ok;
  CHECK(ok == written);
  std::printf("%s", r.out.c_str());
}
