// tests/apps/test_cli.cpp: the `octet` command line as a user meets it. Each
// case runs the real binary (OCTET_EXE) in a shell and checks its exit code
// and what it prints:
//   - wrong commands and flags: exit 2 and a message naming the flag;
//   - bad files (missing data, truncated checkpoints and model files, corrupt
//     images): exit 1 and a message naming the file; nothing half-written;
//   - the main job's chain on a tiny generated image tree: train with QAT ->
//     export -> eval in the engine (== integer simulation on every image) ->
//     run -> inspect.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/image.h"
#include "engine/kernels.h"
#include "tests/apps/cli_util.h"
#include "tests/core/test_data_util.h"

using octet::testing::class_image;
using octet::testing::contains;
using octet::testing::octet_cli;
using octet::testing::quoted;
using octet::testing::Result;
using octet::testing::TempDir;
using octet::testing::write_tree;
using octet::testing::write_bytes;
using octet::testing::write_text;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The trainer's line per epoch it ran ("epoch 2/3  lr ..."), cut to "epoch 2/3".
std::vector<std::string> epoch_lines(const std::string& output) {
  std::vector<std::string> r;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("epoch ", 0) == 0) r.push_back(line.substr(0, line.find("  ")));
  return r;
}

// The epoch and step columns of each row of a run's log.csv ("2,8").
std::vector<std::string> log_epochs(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> r;
  std::string line;
  std::getline(f, line);  // the header
  while (std::getline(f, line)) r.push_back(line.substr(0, line.find(',', line.find(',') + 1)));
  return r;
}

}  // namespace

TEST_CASE("cli: no command, an unknown command, and every command's --help") {
  const Result none = octet_cli("");
  CHECK(none.code == 2);
  CHECK(contains(none.output, "usage: octet <command>"));

  const Result unknown = octet_cli("frobnicate");
  CHECK(unknown.code == 2);
  CHECK(contains(unknown.output, "unknown command 'frobnicate'"));

  for (const char* cmd : {"train", "eval", "calibrate", "export", "run", "inspect", "compare", "bench", "study"}) {
    CAPTURE(cmd);
    const Result help = octet_cli(std::string(cmd) + " --help");
    CHECK(help.code == 0);
    CHECK(contains(help.output, std::string("usage: octet ") + cmd));
  }
}

TEST_CASE("cli: wrong flags exit 2 with a message that names the flag") {
  const Result unknown_flag = octet_cli("train --frobnicate 3");
  CHECK(unknown_flag.code == 2);
  CHECK(contains(unknown_flag.output, "--frobnicate"));
  CHECK(contains(unknown_flag.output, "octet train --help"));

  const Result not_a_number = octet_cli("train --epochs many");
  CHECK(not_a_number.code == 2);
  CHECK(contains(not_a_number.output, "--epochs"));
  CHECK(contains(not_a_number.output, "many"));

  const Result bad_init = octet_cli("train --weight-init xavier --data /nonexistent");
  CHECK(bad_init.code == 2);
  CHECK(contains(bad_init.output, "--weight-init"));
  CHECK(contains(bad_init.output, "valid: torch, he"));

  const std::pair<const char*, const char*> usage_errors[] = {
      {"train --cutout -2 --data /nonexistent", "--cutout"},
      {"train --cutout 8 --no-augment --data /nonexistent", "--no-augment"},
      {"train --cutout-until 30 --data /nonexistent", "--cutout-until needs --cutout"},
      {"train --snapshots-from -1 --data /nonexistent", "--snapshots-from"},
      {"train --stop-after -1 --data /nonexistent", "--stop-after"},
      {"train --log-every -3 --data /nonexistent", "--log-every"},
      {"train --qat --round sideways --data /nonexistent", "sideways"},
      {"train --unsigned --data /nonexistent", "need --qat"},
      {"train --qat --init a.ckpt --fork b.ckpt --data /nonexistent", "--fork and --init"},
      {"train --cutout 8 --cutout-until 0 --data /nonexistent", "--cutout-until"},
      {"train --alternate-flip --no-augment --data /nonexistent", "--alternate-flip"},
      {"train --ema 1 --data /nonexistent", "--ema"},
      {"train --ema -0.5 --data /nonexistent", "--ema"},
      {"train --ema 0.999 --qat --data /nonexistent", "--qat"},
      {"train --sam -0.05 --data /nonexistent", "--sam"},
      {"train --sam nan --data /nonexistent", "--sam"},
      {"train --sam 0.05 --qat --data /nonexistent", "--qat"},
      {"train --self-distill 1.5 --data /nonexistent", "--self-distill"},
      {"train --self-distill nan --data /nonexistent", "--self-distill"},
      {"train --qat --init x.ckpt --zero-init-residual --data /nonexistent", "--zero-init-residual"},
      {"train --reparam acb --data /nonexistent", "--reparam must be none or a comma list of 1x1, 1x3, 3x1"},
      {"train --reparam 1x1,1x1 --data /nonexistent", "'1x1' twice"},
      {"train --reparam 1x1 --qat --data /nonexistent", "--reparam is for float training"},
      {"train --comm-timeout 0 --data /nonexistent", "--comm-timeout must be > 0"},
      {"train --comm-timeout -5 --sync-bn --data /nonexistent", "--comm-timeout"},
      {"study --out /nonexistent/d", "the study file"},
      {"study s.study", "--out DIR"},
      {"study s.study --out /nonexistent/d --jobs 0", "--jobs"},
      {"study s.study --out /nonexistent/d --threads 0", "--threads"},
      {"study s.study --out /nonexistent/d --intsim-images -1", "--intsim-images"},
      {"study report", "the study folder"},
      {"eval x.ckpt --intsim-images 10 --data /nonexistent", "--intsim-images needs --intsim"},
      {"eval x.ckpt --tta mirror --data /nonexistent", "--tta"},
      {"eval x.ckpt --bn-stats fresh --data /nonexistent", "--bn-stats must be clean or augmented"},
      {"eval x.ckpt --bn-stats clean --mode engine --data /nonexistent", "--bn-stats is for the float forward"},
  };
  for (auto [args, flag] : usage_errors) {
    const Result r = octet_cli(args);
    CHECK_MESSAGE(r.code == 2, args);
    CHECK_MESSAGE(contains(r.output, flag), args);
  }

  // A flag without a value may stand before -o (once swallowed as its value).
  const Result before_o = octet_cli("calibrate /nonexistent/f.ckpt --cle --bias-correction -o /nonexistent/p.ckpt");
  CHECK(before_o.code == 1);  // not a usage error: the checkpoint is what is missing
  CHECK_FALSE(contains(before_o.output, "takes no value"));
  CHECK(contains(before_o.output, "/nonexistent/f.ckpt"));
  const Result o_without = octet_cli("calibrate x.ckpt --data /nonexistent -o");
  CHECK(o_without.code == 2);
  CHECK(contains(o_without.output, "--out needs a value"));

  const Result bad_preset = octet_cli("train --preset huge --data /nonexistent");
  CHECK(bad_preset.code != 0);
  CHECK(contains(bad_preset.output, "huge"));

  const Result missing_model = octet_cli("inspect");
  CHECK(missing_model.code == 2);

  const Result export_no_out = octet_cli("export some.ckpt");
  CHECK(export_no_out.code != 0);
  CHECK(contains(export_no_out.output, "-o"));
}

TEST_CASE("cli: bench engine prints the peer's keys, CPU time per image and, with --layers, a row per op") {
  const Result r = octet_cli("bench engine --threads 1 --seconds 0.02 --layers");
  REQUIRE(r.code == 0);
  for (const char* key : {"infer_int8_b1_img_s ", "infer_int8_b100_img_s ", "infer_int8_b100_gmacs ",
                          "infer_int8_b1_cpu_us_per_img ",
                          "infer_int8_b100_cpu_us_per_img ", "engine_arena_bytes ", "isa "})
    CHECK_MESSAGE(contains(r.output, std::string("\n") + key), key);
  CHECK(contains(r.output, "layers at batch 1: "));
  CHECK(contains(r.output, "layers at batch 100: "));
  // Both tables list the random ResNet-20's ops, stem to fc, with their multiply-adds.
  const size_t b100 = r.output.find("layers at batch 100: ");
  REQUIRE(b100 != std::string::npos);
  const std::string table = r.output.substr(b100);
  for (const char* row : {" stem ", " layer1.0.conv1 ", " layer3.2.add ", " fc "})
    CHECK_MESSAGE(contains(table, row), row);
  CHECK(contains(table, "2.359"));  // a 3x3 conv of 16 -> 16 channels on 32x32: 2.359 MMAC per image

  const Result bad = octet_cli("bench engine --seconds 0");
  CHECK(bad.code == 2);
  CHECK(contains(bad.output, "--seconds must be > 0"));
}

TEST_CASE("cli: bench peak measures the int8 and fp32 peak rates, 1 thread and N") {
  const Result r = octet_cli("bench peak --threads 2 --seconds 0.02");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(contains(r.output, "threads 2\n"));
#if defined(__x86_64__)
  auto value = [&](const std::string& key) {
    const size_t at = r.output.find(key + " ");
    REQUIRE_MESSAGE(at != std::string::npos, key);
    return std::stod(r.output.substr(at + key.size() + 1));
  };
  if (!__builtin_cpu_supports("avx2")) {
    CHECK(contains(r.output, "peak_int8_pmaddwd_gmacs unsupported"));
    return;
  }
  // Per core and second: vpmaddwd does 16 multiply-adds, at most a few per
  // cycle at a few GHz. A rate outside [0.5, 500] G/s per thread would mean
  // the loop was optimized away or miscounted, not a fast or slow machine.
  for (const char* key : {"peak_int8_pmaddwd_gmacs", "peak_int8_maddubs_gmacs", "peak_fp32_fma_gflops"})
    for (const char* n : {"_t1", "_tN"}) {
      const double v = value(std::string(key) + n);
      CHECK_MESSAGE(v > 0.5, key << n);
      CHECK_MESSAGE(v < (std::string(n) == "_t1" ? 500 : 1000), key << n);
    }
  if (octet::engine::isa_supported(octet::engine::Isa::avx512_vnni))
    CHECK(value("peak_int8_vnni_gmacs_t1") > 0.5);
  else
    CHECK(contains(r.output, "peak_int8_vnni_gmacs unsupported"));
#else
  CHECK(contains(r.output, "peak unmeasured"));
#endif
  const Result bad = octet_cli("bench peak --threads -1");
  CHECK(bad.code == 2);
  CHECK(contains(bad.output, "--threads must be >= 0"));
}

TEST_CASE("cli: bench train prints the peer's keys, the CPU cost of a step, the peak memory and the step's profile") {
  const Result r = octet_cli("bench train --threads 1 --iters 1");
  REQUIRE(r.code == 0);
  auto value = [&](const std::string& key) {
    const size_t at = r.output.find("\n" + key + " ");
    REQUIRE_MESSAGE(at != std::string::npos, key);
    return std::stod(r.output.substr(at + key.size() + 2));
  };
  for (const char* key : {"train_fp32_img_s", "train_qat_img_s", "infer_fp32_b1_img_s", "infer_fp32_b100_img_s",
                          "train_fp32_cpu_ms_per_step", "peak_rss_mb"})
    CHECK_MESSAGE(value(key) > 0, key);
  const double sys = value("train_fp32_sys_share");
  CHECK(sys >= 0);
  CHECK(sys <= 1);
  CHECK(value("train_fp32_minor_faults_per_step") >= 0);
  // ResNet-20 at batch 128 holds tens of MB of activations.
  CHECK(value("peak_rss_mb") > 20);
  // Where a step goes: the convolution's three parts, BN, the optimizer, and
  // the rest; the parts add up to the step (each line: ms, then the share).
  const double step_ms = value("train_profile_step_ms");
  CHECK(step_ms > 0);
  double sum_ms = 0;
  for (size_t at = r.output.find("\ntrain_profile."); at != std::string::npos;
       at = r.output.find("\ntrain_profile.", at + 1)) {
    const size_t space = r.output.find(' ', at);
    sum_ms += std::stod(r.output.substr(space + 1));
  }
  for (const char* part : {"conv2d_forward", "conv2d_input_gradient", "conv2d_weight_gradient", "batch_norm_forward",
                           "batch_norm_backward", "relu_backward", "optimizer_step", "other"})
    CHECK_MESSAGE(value(std::string("train_profile.") + part) >= 0, part);
  CHECK(sum_ms == doctest::Approx(step_ms).epsilon(0.02));
  CHECK(value("train_profile.conv2d_forward") > value("train_profile.optimizer_step"));

  const Result bad = octet_cli("bench train --iters 0");
  CHECK(bad.code == 2);
  CHECK(contains(bad.output, "--iters must be >= 1"));
}

TEST_CASE("cli: missing data and unreadable files exit 1 and name the path") {
  TempDir tmp;
  const Result no_data = octet_cli("train --data " + quoted(tmp / "no-such-folder") + " --out " + quoted(tmp / "run"));
  CHECK(no_data.code == 1);
  CHECK(contains(no_data.output, tmp / "no-such-folder"));

  write_text(tmp / "garbage.oct", "this is not a model file");
  const Result garbage = octet_cli("inspect " + quoted(tmp / "garbage.oct"));
  CHECK(garbage.code == 1);
  CHECK(contains(garbage.output, tmp / "garbage.oct"));

  write_text(tmp / "garbage.ckpt", "neither is this a checkpoint");
  const Result bad_ckpt = octet_cli("export " + quoted(tmp / "garbage.ckpt") + " -o " + quoted(tmp / "out.oct"));
  CHECK(bad_ckpt.code == 1);
  CHECK(contains(bad_ckpt.output, tmp / "garbage.ckpt"));
  CHECK_FALSE(fs::exists(tmp / "out.oct"));  // nothing half-written
}

TEST_CASE("cli: train --reparam 1x1 -> eval of the folded checkpoint -> QAT --init from it") {
  TempDir tmp;
  const std::string data = tmp / "tree", run = tmp / "run";
  write_tree(data, 48);
  const Result train = octet_cli("train --preset quick --reparam 1x1 --epochs 1 --batch 16 --threads 1 --no-progress "
                                 "--data " + quoted(data) + " --out " + quoted(run));
  INFO(train.output);
  REQUIRE(train.code == 0);
  CHECK(contains(train.output, "(+ 31040 in train-time 1x1 branches, folded away in every checkpoint)"));
  // The checkpoint's model is the plain resnet20 and scores what training logged.
  auto top1 = [](const std::string& out, const std::string& before) {
    const size_t at = out.find(before);
    return at == std::string::npos ? std::string("(none)") : out.substr(at + before.size(), out.find('%', at) - at - before.size());
  };
  const Result eval = octet_cli("eval " + quoted(run + "/last.ckpt") + " --threads 1 --data " + quoted(data));
  INFO(eval.output);
  REQUIRE(eval.code == 0);
  CHECK(top1(eval.output, "top1 ") == top1(train.output, "final: epoch 1 test top1 "));
  // Precise BN statistics over the train split before evaluating.
  const Result bn = octet_cli("eval " + quoted(run + "/last.ckpt") + " --bn-stats augmented --bn-batch 32 --threads 1 "
                              "--data " + quoted(data));
  INFO(bn.output);
  CHECK(bn.code == 0);
  CHECK(contains(bn.output, "BN statistics: the average of 3 batches of 32 augmented training images"));
  CHECK(top1(bn.output, "top1 ") != "(none)");
  // QAT starts from it like from any float checkpoint.
  const Result qat = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 1 --batch 16 --threads 1 --no-progress "
                               "--init " + quoted(run + "/last.ckpt") + " --data " + quoted(data) + " --out " +
                               quoted(tmp / "qat"));
  INFO(qat.output);
  CHECK(qat.code == 0);
  CHECK(contains(qat.output, "model resnet20: 271954 parameters\n"));  // 2 classes, no branches
}

TEST_CASE("cli: train --stop-after stops early, --resume goes on bit for bit; --log-every writes steps.csv") {
  TempDir tmp;
  const std::string data = tmp / "tree";
  write_tree(data, 32);  // 64 images, batch 16: 4 steps per epoch
  const std::string flags = "train --preset quick --qat --quant-delay 0.5 --epochs 3 --batch 16 --lr 0.05 --threads 1 "
                            "--log-every 3 --no-progress --data " + quoted(data);
  const Result whole = octet_cli(flags + " --out " + quoted(tmp / "whole"));
  INFO(whole.output);
  REQUIRE(whole.code == 0);
  // steps.csv: windows of 3 steps, cut at each epoch's end (steps 3, 4 | 7, 8 | 11, 12).
  std::ifstream steps(tmp / "whole/steps.csv");
  std::vector<std::string> rows;
  for (std::string line; std::getline(steps, line);) rows.push_back(line);
  REQUIRE(rows.size() == 7);
  CHECK(rows[0] == "step,steps,lr,train_loss");
  CHECK(rows[1].rfind("3,3,", 0) == 0);
  CHECK(rows[2].rfind("4,1,", 0) == 0);
  CHECK(rows[6].rfind("12,1,", 0) == 0);

  const Result first = octet_cli(flags + " --stop-after 1 --out " + quoted(tmp / "part"));
  INFO(first.output);
  REQUIRE(first.code == 0);
  CHECK(contains(first.output, "stopped after epoch 1 of 3 (--stop-after); --resume goes on"));
  CHECK(!fs::exists(tmp / "part/epoch_2.ckpt"));
  CHECK(epoch_lines(first.output) == std::vector<std::string>{"epoch 1/3"});
  CHECK(log_epochs(tmp / "part/log.csv") == std::vector<std::string>{"1,4"});
  const Result again = octet_cli(flags + " --stop-after 1 --resume --out " + quoted(tmp / "part"));
  CHECK(contains(again.output, "nothing to do: the run in " + tmp / "part" + " stopped after epoch 1 of 3"));
  CHECK(epoch_lines(again.output).empty());
  CHECK(log_epochs(tmp / "part/log.csv") == std::vector<std::string>{"1,4"});
  const Result rest = octet_cli(flags + " --resume --out " + quoted(tmp / "part"));
  INFO(rest.output);
  REQUIRE(rest.code == 0);
  CHECK(contains(rest.output, "resuming after epoch 1"));
  CHECK(!contains(rest.output, "epoch 1/3"));  // only the remaining epochs ran
  CHECK(contains(rest.output, "epoch 2/3"));
  CHECK(contains(rest.output, "epoch 3/3"));
  // ... each once; the log has every epoch exactly once, at the uninterrupted run's steps.
  CHECK(epoch_lines(rest.output) == std::vector<std::string>{"epoch 2/3", "epoch 3/3"});
  CHECK(epoch_lines(whole.output) == std::vector<std::string>{"epoch 1/3", "epoch 2/3", "epoch 3/3"});
  CHECK(log_epochs(tmp / "whole/log.csv") == std::vector<std::string>{"1,4", "2,8", "3,12"});
  CHECK(log_epochs(tmp / "part/log.csv") == log_epochs(tmp / "whole/log.csv"));
  CHECK(read_all(tmp / "part/steps.csv") == read_all(tmp / "whole/steps.csv"));
  const octet::Checkpoint a = octet::load_checkpoint(tmp / "whole/last.ckpt"), b = octet::load_checkpoint(tmp / "part/last.ckpt");
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    CAPTURE(a.tensors[i].first);
    const octet::Tensor &x = a.tensors[i].second, &y = b.tensors[i].second;
    REQUIRE(x.numel() == y.numel());
    CHECK(std::memcmp(x.data(), y.data(), sizeof(float) * static_cast<size_t>(x.numel())) == 0);
  }

  // A fork may change the QAT knobs; the log names them.
  const Result fork = octet_cli("train --preset quick --qat --quant-delay 0.5 --bits 4 --epochs 3 --batch 16 --lr 0.05 "
                                "--threads 1 --no-progress --data " + quoted(data) + " --fork " +
                                quoted(tmp / "part/last.ckpt") + " --out " + quoted(tmp / "fork4"));
  INFO(fork.output);
  CHECK(fork.code == 0);
  CHECK(contains(fork.output, "qat.act_bits 8 -> 4, qat.weight_bits 8 -> 4"));
}

TEST_CASE("cli: every QAT knob flag of octet train reaches the run's configuration, and the run trains under it") {
  TempDir tmp;
  const std::string data = tmp / "tree";
  write_tree(data, 16);  // 32 images, batch 16: 2 steps
  const std::pair<std::string, std::vector<std::string>> cases[] = {
      {"--round half_up", {"qat.round = half_up"}},
      {"--round half_away", {"qat.round = half_away_from_zero"}},
      {"--range-given -4,4", {"qat.range_given = true", "qat.range_min = -4", "qat.range_max = 4"}},
      {"--add-inputs tied", {"qat.add_inputs = tied"}},
      {"--observer minmax", {"qat.observer = minmax"}},
      {"--qat-set bits.fc.0=4,observer_decay=0.99", {"qat.bits.fc.0 = 4", "qat.observer_decay = 0.99"}},
      {"--per-tensor", {"qat.per_channel_weights = false"}},
      {"--unsigned", {"qat.signed_activations = false"}},
      {"--weights-only", {"qat.quantize_activations = false"}},
      {"--bits 6", {"qat.weight_bits = 6", "qat.act_bits = 6"}},
      {"--quant-op fake_quant --float-output", {"qat.op = fake_quant", "qat.quantize_output = false"}},
      {"--quant-delay-step 1 --bn-freeze 0.5 --observer-freeze 0.5",
       {"qat.quant_delay_step = 1", "qat.bn_freeze = 0.5", "qat.observer_freeze = 0.5"}},
  };
  int n = 0;
  for (const auto& [flags, lines] : cases) {
    CAPTURE(flags);
    const std::string out = tmp / ("run" + std::to_string(n++));
    const Result r = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 1 --batch 16 --threads 1 --no-progress " +
                               flags + " --data " + quoted(data) + " --out " + quoted(out));
    INFO(r.output);
    REQUIRE(r.code == 0);
    std::ifstream cfg(out + "/config.txt");
    std::stringstream text;
    text << cfg.rdbuf();
    for (const std::string& line : lines) CHECK(contains(text.str(), line + "\n"));
    // The checkpoint carries the same configuration: it exports (except the
    // knobs the engine does not take) like any QAT checkpoint.
    CHECK(fs::exists(out + "/last.ckpt"));
  }
}

TEST_CASE("cli: float train -> calibrate (PTQ) -> export -> compare: the per-layer error analysis on a real run") {
  TempDir tmp;
  const std::string data = tmp / "tree";
  write_tree(data, 32);
  const Result train = octet_cli("train --preset quick --epochs 1 --batch 16 --threads 1 --no-progress --data " +
                                 quoted(data) + " --out " + quoted(tmp / "f"));
  INFO(train.output);
  REQUIRE(train.code == 0);
  const Result cal = octet_cli("calibrate " + quoted(tmp / "f/last.ckpt") + " --data " + quoted(data) +
                               " --observer percentile --images 32 --batch 16 --threads 1 -o " + quoted(tmp / "p.ckpt"));
  INFO(cal.output);
  REQUIRE(cal.code == 0);
  CHECK(contains(cal.output, "calibrating on 32 training images with observer percentile"));
  CHECK(contains(cal.output, "wrote " + tmp / "p.ckpt"));
  // A calibrated checkpoint is quantized: it cannot be calibrated again.
  const Result twice = octet_cli("calibrate " + quoted(tmp / "p.ckpt") + " --data " + quoted(data) + " -o " +
                                 quoted(tmp / "q.ckpt"));
  CHECK(twice.code == 1);
  CHECK(contains(twice.output, "already quantized"));
  CHECK(!fs::exists(tmp / "q.ckpt"));

  const Result exported = octet_cli("export " + quoted(tmp / "p.ckpt") + " -o " + quoted(tmp / "p.oct"));
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  const Result cmp = octet_cli("compare " + quoted(tmp / "p.ckpt") + " " + quoted(tmp / "p.oct") + " --data " +
                               quoted(data) + " --threads 1");
  INFO(cmp.output);
  REQUIRE(cmp.code == 0);
  CHECK(contains(cmp.output, "identical to the export of the checkpoint"));
  CHECK(contains(cmp.output, "comparing 16 test images"));
  // One row per engine tensor, named by its quantizer and the op that makes it.
  for (const char* row : {"relu.1                   conv1", "layer1.0.relu2.1         layer1.0.add",
                          "layer2.0.shortcut.1.1    layer2.0.shortcut.0", "avgpool.1                avgpool.0",
                          "fc.1                     fc.0"})
    CHECK_MESSAGE(contains(cmp.output, row), row);
  CHECK(contains(cmp.output, "argmax agreement over 16 images"));
  // The float checkpoint (calibrated on the fly, with other settings) against
  // that model file: compare says they differ, and matches layers by name.
  const Result other = octet_cli("compare " + quoted(tmp / "f/last.ckpt") + " " + quoted(tmp / "p.oct") + " --data " +
                                 quoted(data) + " --threads 1");
  INFO(other.output);
  CHECK(other.code == 0);
  CHECK(contains(other.output, "float -> PTQ calibration: observer minmax"));
  CHECK(contains(other.output, "DIFFERS from the export of the checkpoint: layers are matched by tensor name"));
}

TEST_CASE("cli: train --qat -> export -> eval (engine == simulation) -> run -> inspect on a tiny image tree") {
  TempDir tmp;
  const std::string data = tmp / "tree", run = tmp / "run", model = tmp / "model.oct";
  write_tree(data, 48);

  // Two epochs of QAT from scratch (fake quant from the start), one thread.
  const Result train = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 2 --batch 16 --lr 0.05 --threads 1 "
                                 "--snapshots-from 1 --no-progress --data " + quoted(data) + " --out " + quoted(run));
  INFO(train.output);
  REQUIRE(train.code == 0);
  CHECK(fs::exists(run + "/last.ckpt"));
  CHECK(fs::exists(run + "/loss.png"));
  CHECK(fs::exists(run + "/accuracy.png"));
  CHECK(fs::exists(run + "/epoch_1.ckpt"));
  CHECK(fs::exists(run + "/epoch_2.ckpt"));
  {
    std::ifstream log(run + "/log.csv");
    std::string line;
    int rows = 0;
    while (std::getline(log, line)) ++rows;
    CHECK(rows == 3);  // header + one row per epoch
  }

  // --resume of the finished run restores it (QAT observers included) and has nothing left to do.
  const Result again = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 2 --batch 16 --lr 0.05 --threads 1 "
                                 "--no-progress --resume --data " + quoted(data) + " --out " + quoted(run));
  INFO(again.output);
  CHECK(again.code == 0);
  CHECK(contains(again.output, "resuming after epoch 2"));
  CHECK(contains(again.output, "nothing to do"));
  // ... and --resume in a folder without a run names the checkpoint it looked for.
  const Result nothing = octet_cli("train --preset quick --batch 16 --resume --no-progress --data " + quoted(data) + " --out " +
                                   quoted(tmp / "empty-run"));
  INFO(nothing.output);
  CHECK(nothing.code == 1);
  CHECK(contains(nothing.output, tmp / "empty-run/last.ckpt"));

  // A fork of the run after its first epoch, with one more epoch: the QAT
  // observers come along, the changed flag is named, the log has all three.
  const Result fork = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 3 --batch 16 --lr 0.05 --threads 1 "
                                "--no-progress --fork " + quoted(run + "/epoch_1.ckpt") + " --data " + quoted(data) +
                                " --out " + quoted(tmp / "fork"));
  INFO(fork.output);
  CHECK(fork.code == 0);
  CHECK(contains(fork.output, "forked from " + run + "/epoch_1.ckpt after epoch 1; changed: epochs 2 -> 3"));
  CHECK(contains(fork.output, "final: epoch 3"));
  {
    std::ifstream log(tmp / "fork/log.csv");
    std::string line;
    int rows = 0;
    while (std::getline(log, line)) ++rows;
    CHECK(rows == 4);
  }
  // A fork may change the QAT knobs, but not the quantizers the model has:
  // quantized Add inputs need quantizers (and their ranges) the trunk never had.
  const Result other = octet_cli("train --preset quick --qat --quant-delay 0 --add-inputs untied --epochs 3 --batch 16 "
                                 "--threads 1 --no-progress --fork " + quoted(run + "/epoch_1.ckpt") + " --data " +
                                 quoted(data) + " --out " + quoted(tmp / "fork-add"));
  INFO(other.output);
  CHECK(other.code == 1);
  CHECK(contains(other.output, run + "/epoch_1.ckpt"));
  CHECK(contains(other.output, "add.input_a"));
  const Result batch = octet_cli("train --preset quick --qat --quant-delay 0 --epochs 3 --batch 8 --threads 1 "
                                 "--no-progress --fork " + quoted(run + "/epoch_1.ckpt") + " --data " + quoted(data) +
                                 " --out " + quoted(tmp / "fork-batch"));
  CHECK(batch.code == 1);
  CHECK(contains(batch.output, "a fork may change any flag but these"));
  // A fork into its trunk's folder would overwrite the trunk.
  const Result onto = octet_cli("train --preset quick --fork " + quoted(run + "/epoch_1.ckpt") + " --data " +
                                quoted(data) + " --out " + quoted(run));
  CHECK(onto.code == 2);
  CHECK(contains(onto.output, "give the fork a new folder"));

  // Test-time flip on the fake-quant forward of the checkpoint; the engine has no such mode.
  const Result tta = octet_cli("eval " + quoted(run + "/last.ckpt") + " --mode fakequant --tta flip --threads 1 --data " +
                               quoted(data));
  INFO(tta.output);
  CHECK(tta.code == 0);
  CHECK(contains(tta.output, "mode fakequant, test-time flip"));
  const Result tta_engine = octet_cli("eval " + quoted(run + "/last.ckpt") + " --mode engine --tta flip --data " + quoted(data));
  CHECK(tta_engine.code == 2);
  CHECK(contains(tta_engine.output, "--tta"));

  const Result exported = octet_cli("export " + quoted(run + "/last.ckpt") + " -o " + quoted(model));
  INFO(exported.output);
  REQUIRE(exported.code == 0);
  CHECK(contains(exported.output, "wrote " + model));

  // The engine on all 16 test images, with the integer simulation beside it.
  const Result eval = octet_cli("eval " + quoted(model) + " --data " + quoted(data) + " --intsim --threads 1");
  INFO(eval.output);
  REQUIRE(eval.code == 0);
  CHECK(contains(eval.output, "engine == integer simulation (int8 logits, bit for bit): 16 of 16 images"));

  // run: two images at the model's size, one that must be resized (--resize:
  // never without asking), one corrupt file. The model of two epochs is near chance, so run's top-1 is
  // checked against the engine's prediction through another path: octet eval
  // of a one-folder tree holding the same two files (names that do not give
  // the class away; --top 1 prints only the prediction).
  fs::create_directories(tmp / "pair/test/left");
  fs::create_directories(tmp / "pair/test/right");
  octet::write_png(tmp / "pair/test/left/a.png", class_image(0, 11).data(), 32, 32, 3);
  octet::write_png(tmp / "pair/test/right/b.png", class_image(1, 7).data(), 32, 32, 3);
  octet::write_png(tmp / "c.png", class_image(0, 3, 48).data(), 48, 48, 3);
  write_bytes(tmp / "corrupt.png", {0x89, 'P', 'N', 'G', 0, 1, 2, 3});
  const Result pair = octet_cli("eval " + quoted(model) + " --data " + quoted(tmp / "pair") + " --json " +
                                quoted(tmp / "pair.json"));
  INFO(pair.output);
  REQUIRE(pair.code == 0);
  const std::vector<uint8_t> pair_bytes = read_all(tmp / "pair.json");
  const std::string pair_json(pair_bytes.begin(), pair_bytes.end());
  // confusion [[a->left, a->right], [b->left, b->right]]: what the engine predicts for a and for b
  const size_t conf = pair_json.find("\"confusion\"");
  REQUIRE(conf != std::string::npos);
  std::vector<int> cells;
  for (size_t i = pair_json.find('[', conf); cells.size() < 4 && i < pair_json.size(); ++i)
    if (std::isdigit(static_cast<unsigned char>(pair_json[i]))) cells.push_back(pair_json[i] - '0');
  REQUIRE(cells.size() == 4);
  const std::string a_class = cells[0] == 1 ? "left" : "right", b_class = cells[2] == 1 ? "left" : "right";
  const Result ok = octet_cli("run " + quoted(model) + " " + quoted(tmp / "pair/test/left/a.png") + " " +
                              quoted(tmp / "pair/test/right/b.png") + " " + quoted(tmp / "c.png") + " --top 1 --resize");
  INFO(ok.output);
  CHECK(ok.code == 0);
  CHECK(contains(ok.output, "a.png: 32x32\n  " + a_class + " "));
  CHECK(contains(ok.output, "b.png: 32x32\n  " + b_class + " "));
  CHECK(contains(ok.output, "c.png: 48x48 (resized to 32x32"));
  // Without --resize an image of another size than the model's is refused, naming both.
  const Result other_size = octet_cli("run " + quoted(model) + " " + quoted(tmp / "c.png"));
  INFO(other_size.output);
  CHECK(other_size.code == 1);
  CHECK(contains(other_size.output, "the image is 48x48, the model takes 32x32 (3 channels) images"));
  CHECK(contains(other_size.output, "--resize"));
  const Result corrupt = octet_cli("run " + quoted(model) + " " + quoted(tmp / "corrupt.png"));
  CHECK(corrupt.code == 1);
  CHECK(contains(corrupt.output, tmp / "corrupt.png"));

  const Result inspect = octet_cli("inspect " + quoted(model));
  INFO(inspect.output);
  CHECK(inspect.code == 0);
  CHECK(contains(inspect.output, "M0"));

  // The same file cut in half is refused, naming the file.
  const std::vector<uint8_t> bytes = read_all(model);
  REQUIRE(bytes.size() > 100);
  write_bytes(tmp / "half.oct", std::vector<uint8_t>(bytes.begin(), bytes.begin() + bytes.size() / 2));
  const Result half = octet_cli("inspect " + quoted(tmp / "half.oct"));
  CHECK(half.code == 1);
  CHECK(contains(half.output, tmp / "half.oct"));
}
