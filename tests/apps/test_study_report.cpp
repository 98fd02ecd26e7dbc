// tests/apps/test_study_report.cpp: `octet study report` on a synthetic study
// folder (3 rows x 2 seeds + a trunk; one job failed, one unfinished) with
// known numbers: the table's mean ± std, Δ vs the baseline, the engine
// columns, sizes and paper figures; the per-seed table; the failed and
// unfinished jobs; jobs.csv (RFC 4180); the figures decode to the chart size
// and show their band; missing and malformed files throw naming the file.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "apps/study/report.h"
#include "core/image.h"
#include "tests/core/test_data_util.h"

using namespace octet::study;
using octet::testing::error_of;
using octet::testing::TempDir;
using octet::testing::write_text;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kStudy = R"(# a synthetic study
title    = Synthetic study
train    = --preset quick --epochs 2
baseline = --qat
seeds    = 0, 1
paper    = ResNet-20 in the paper (one run per row)

row.baseline       =
row.baseline.paper = 91.50 / 99.60
row.4bits          = --weight-bits 4
row.4bits.label    = 4-bit weights
row.bits16         = --weight-bits 16
row.bits16.label   = 16 bits
row.bits16.paper   = - / 99.00

figure.loss       = baseline, 4bits, bits16
figure.loss.title = Loss: baseline and bits
)";

json scores(double top1, double top5) {
  return {{"top1", top1}, {"top5", top5}, {"loss", 0.9}, {"recall", std::vector<double>(10, top1)}};
}
json engine_scores(double top1, double top5, int images, int equal) {
  json e = scores(top1, top5);
  e["images"] = images;
  e["equal_intsim"] = equal;
  return e;
}

// A done job's result.json (engine null when images == 0) and its steps csv.
json done(const std::string& id, const std::string& row, int seed, double fq1, double fq5, double eng1, int images,
          int equal, const std::vector<double>& losses) {
  json r = {{"job", id}, {"row", row}, {"seed", seed}, {"kind", "train"}, {"status", "done"},
            {"command", {"octet", "train", "--qat"}}, {"epochs", 2}, {"epochs_trained", 2}, {"seconds", 12.5},
            {"threads", 1}, {"machine", "test (avx2)"}, {"float", scores(fq1 + 0.01, fq5)},
            {"fakequant", scores(fq1, fq5)}, {"engine", nullptr}, {"weight_bits", 8},
            {"theoretical_bytes", 271000}, {"model_file_bytes", 290500},
            {"class_names", {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}},
            {"steps_csv", "run/steps.csv"}};
  if (images > 0) r["engine"] = engine_scores(eng1, fq5, images, equal);
  std::string csv = "step,steps,lr,train_loss\n";
  for (size_t i = 0; i < losses.size(); ++i)
    csv += std::to_string(10 * (i + 1)) + ",10,0.1," + std::to_string(losses[i]) + "\n";
  r["_csv"] = csv;
  return r;
}

// Writes the study folder: study.study, plan.json, the jobs' files.
void write_study(const std::string& dir) {
  write_text(dir + "/study.study", kStudy);
  json plan = {{"jobs", json::array()}};
  auto add = [&](const std::string& id, const std::string& row, int seed, const std::string& kind,
                 const json* result) {
    plan["jobs"].push_back({{"id", id}, {"row", row}, {"seed", seed}, {"kind", kind}, {"dir", "jobs/" + id},
                            {"depends", row.empty() ? json::array() : json{"trunk.s0.0000aaaa"}},
                            {"fork_epoch", row.empty() ? 0 : 1}});
    if (!result) return;
    json r = *result;
    if (r.contains("_csv")) {
      write_text(dir + "/jobs/" + id + "/run/steps.csv", r["_csv"].get<std::string>());
      r.erase("_csv");
    }
    write_text(dir + "/jobs/" + id + "/result.json", r.dump(2));
  };
  json trunk = done("trunk.s0.0000aaaa", "", 0, 0.70, 0.96, 0, 0, 0, {2.0, 1.5, 1.0});
  trunk["kind"] = "trunk";
  trunk["fakequant"] = nullptr;
  add("trunk.s0.0000aaaa", "", 0, "trunk", &trunk);
  const json b0 = done("baseline.s0.11111111", "baseline", 0, 0.71, 0.97, 0.709, 10000, 10000, {2.0, 1.5, 1.0});
  const json b1 = done("baseline.s1.22222222", "baseline", 1, 0.72, 0.975, 0.718, 10000, 9998, {2.2, 1.3, 1.2});
  const json q0 = done("4bits.s0.33333333", "4bits", 0, 0.68, 0.96, 0.675, 10000, 10000, {2.1, 1.8, 1.6});
  json q1 = {{"job", "4bits.s1.44444444"}, {"row", "4bits"}, {"seed", 1}, {"kind", "train"}, {"status", "failed"},
             {"error", "killed: \"out of memory\", epoch 2"}, {"epochs", 2}, {"epochs_trained", 1}, {"seconds", 3.0}};
  json h0 = done("bits16.s0.55555555", "bits16", 0, 0.718, 0.972, 0, 0, 0, {2.0, 1.4, 1.1});
  h0["engine_note"] = "16-bit rows are fake-quant only";
  h0["weight_bits"] = 16;
  h0["theoretical_bytes"] = 542000;
  h0["model_file_bytes"] = nullptr;
  add("baseline.s0.11111111", "baseline", 0, "train", &b0);
  add("4bits.s0.33333333", "4bits", 0, "train", &q0);
  add("bits16.s0.55555555", "bits16", 0, "train", &h0);
  add("baseline.s1.22222222", "baseline", 1, "train", &b1);
  add("4bits.s1.44444444", "4bits", 1, "train", &q1);
  add("bits16.s1.66666666", "bits16", 1, "train", nullptr);  // unfinished
  write_text(dir + "/plan.json", plan.dump(2));
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The cells of the first Markdown table line whose first cell is `label`.
std::vector<std::string> table_line(const std::string& md, const std::string& label) {
  std::istringstream in(md);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| " + label + " |", 0) != 0) continue;
    std::vector<std::string> cells;
    size_t start = 1;
    for (size_t bar; (bar = line.find(" |", start)) != std::string::npos; start = bar + 2)
      cells.push_back(line.substr(start + 1, bar - start - 1));
    return cells;
  }
  return {};
}

int count_color(const octet::Image& img, uint8_t r, uint8_t g, uint8_t b) {
  int n = 0;
  for (size_t i = 0; i + 2 < img.pixels.size(); i += 3)
    n += img.pixels[i] == r && img.pixels[i + 1] == g && img.pixels[i + 2] == b;
  return n;
}
}  // namespace

TEST_CASE("mean ± std and sizes are formatted as the table prints them") {
  CHECK(mean_std_text({}) == "-");
  CHECK(mean_std_text({71.0}) == "71.00 (1 seed)");
  CHECK(mean_std_text({71.0, 72.0}) == "71.50 ± 0.71");       // sample std: sqrt(0.5)
  CHECK(mean_std_text({70.0, 71.0, 72.0}) == "71.00 ± 1.00");  // sqrt(2 / 2)
  CHECK(human_bytes(812) == "812 B");
  CHECK(human_bytes(271000) == "271.0 kB");
  CHECK(human_bytes(290550) == "290.6 kB");
  CHECK(human_bytes(25530000) == "25.53 MB");
}

TEST_CASE("report of a study folder: the table, the per-seed table, the job lists, jobs.csv and the figures") {
  TempDir tmp;
  const std::string dir = tmp / "study", out = tmp / "out";
  write_study(dir);
  write_report(dir, out);
  const std::string md = read(out + "/report.md");
  INFO(md);

  CHECK(md.rfind("# Synthetic study\n", 0) == 0);
  CHECK(md.find("Seeds 0, 1. Jobs: 7 planned, 5 done, 1 failed, 1 unfinished") != std::string::npos);

  // Columns: row, top-1, top-5, Δ, engine top-1, == simulation, paper, theoretical, file, seeds done.
  const auto base = table_line(md, "baseline");
  REQUIRE(base.size() == 10);
  CHECK(base[1] == "71.50 ± 0.71");  // 71.00 and 72.00: sample std sqrt(0.5)
  CHECK(base[2] == "97.25 ± 0.35");  // 97.00 and 97.50: sqrt(0.125)
  CHECK(base[3] == "(reference)");
  CHECK(base[4] == "71.35 ± 0.64");  // engine 70.90 and 71.80: sqrt(0.405)
  CHECK(base[5] == "19998/20000");
  CHECK(base[6] == "91.50 / 99.60");
  CHECK(base[7] == "271.0 kB");
  CHECK(base[8] == "290.5 kB");
  CHECK(base[9] == "2/2");

  const auto q = table_line(md, "4-bit weights");  // the label, not the id
  REQUIRE(q.size() == 10);
  CHECK(q[1] == "68.00 (1 seed)");  // seed 1 failed
  CHECK(q[3] == "-3.00 (1 seed)");  // paired: 68.00 - 71.00, the baseline of the same seed (not its mean 71.50)
  CHECK(q[4] == "67.50 (1 seed)");
  CHECK(q[5] == "10000/10000");
  CHECK(q[6] == "-");
  CHECK(q[9] == "1/2");

  const auto h = table_line(md, "16 bits");
  REQUIRE(h.size() == 10);
  CHECK(h[1] == "71.80 (1 seed)");
  CHECK(h[3] == "+0.80 (1 seed)");  // 71.80 - 71.00, seed 0's baseline
  CHECK(h[4] == "- [1]");  // no engine figure: a footnote says why
  CHECK(h[5] == "-");
  CHECK(h[6] == "- / 99.00");
  CHECK(h[7] == "542.0 kB");
  CHECK(h[8] == "-");  // no model file
  CHECK(md.find("\n[1] 16-bit rows are fake-quant only\n") != std::string::npos);
  CHECK(md.find("Paper: ResNet-20 in the paper (one run per row).") != std::string::npos);

  // Per seed: the second table's lines (after the main table's).
  const std::string per_seed = md.substr(md.find("## Top-1 % per seed"));
  CHECK(table_line(per_seed, "baseline") == std::vector<std::string>{"baseline", "71.00", "72.00"});
  CHECK(table_line(per_seed, "4-bit weights") == std::vector<std::string>{"4-bit weights", "68.00", "failed"});
  CHECK(table_line(per_seed, "16 bits") == std::vector<std::string>{"16 bits", "71.80", "unfinished"});

  // The failed job with its error; the unfinished one.
  CHECK(md.find("## Failed jobs\n\n- `4bits.s1.44444444` (row 4bits, seed 1): killed: \"out of memory\", epoch 2\n") !=
        std::string::npos);
  CHECK(md.find("## Unfinished jobs\n\n- `bits16.s1.66666666` (train, seed 1)\n") != std::string::npos);

  // jobs.csv: the header and one line per job of the plan, in plan order
  // (trunk, baseline s0, 4bits s0, bits16 s0, baseline s1, 4bits s1, bits16 s1).
  const std::string csv = read(out + "/jobs.csv");
  std::vector<std::string> lines;
  std::istringstream cs(csv);
  for (std::string line; std::getline(cs, line);) lines.push_back(line);
  REQUIRE(lines.size() == 8);
  CHECK(lines[0] ==
        "id,row,seed,kind,status,epochs_trained,seconds,float_top1,float_top5,fq_top1,fq_top5,engine_top1,"
        "engine_top5,equal_intsim,intsim_images,images,model_file_bytes,theoretical_bytes,error");
  CHECK(lines[1] == "trunk.s0.0000aaaa,,0,trunk,done,2,12.5,0.71,0.96,,,,,,,,290500,271000,");
  CHECK(lines[2] == "baseline.s0.11111111,baseline,0,train,done,2,12.5,0.72,0.97,0.71,0.97,0.709,0.97,10000,10000,10000,"
                    "290500,271000,");
  CHECK(lines[4].find(",done,2,12.5,0.728,0.972,0.718,0.972,,,,,,,542000,") != std::string::npos);
  CHECK(lines[6] ==
        "4bits.s1.44444444,4bits,1,train,failed,1,3,,,,,,,,,,,,\"killed: \"\"out of memory\"\", epoch 2\"");
  CHECK(lines[7] == "bits16.s1.66666666,bits16,1,train,unfinished,,,,,,,,,,,,,,");

  // The figures: decode to the chart size; the loss figure shows the
  // baseline's band (palette colour 0 at 25% over white).
  CHECK(md.find("![Loss: baseline and bits](fig_loss.png)") != std::string::npos);
  CHECK(md.find("![top-1 per row](fig_top1.png)") != std::string::npos);
  CHECK(md.find("1 = baseline, 2 = 4-bit weights, 3 = 16 bits") != std::string::npos);
  const octet::Image fig = octet::load_image(out + "/fig_loss.png");
  CHECK(fig.width == 640);
  CHECK(fig.height == 400);
  CHECK(count_color(fig, 199, 221, 236) > 100);
  const octet::Image top = octet::load_image(out + "/fig_top1.png");
  CHECK(top.width == 640);
  CHECK(top.height == 400);

  // The default out_dir is the study folder.
  write_report(dir);
  CHECK(read(dir + "/report.md") == md);
  CHECK(fs::exists(dir + "/fig_loss.png"));

  // A row with no finished job: "-" in the table, named under its figure.
  fs::remove(dir + "/jobs/bits16.s0.55555555/result.json");
  write_report(dir, out);
  const std::string md2 = read(out + "/report.md");
  const auto h2 = table_line(md2, "16 bits");
  REQUIRE(h2.size() == 10);
  CHECK(h2[1] == "-");
  CHECK(h2[3] == "-");
  CHECK(h2[9] == "0/2");
  CHECK(md2.find("4 done, 1 failed, 2 unfinished") != std::string::npos);
  CHECK(md2.find("- Left out: row `bits16` has no finished job.") != std::string::npos);
}

TEST_CASE("missing and malformed files throw naming the file") {
  TempDir tmp;
  const std::string dir = tmp / "study";
  write_study(dir);
  fs::remove(dir + "/plan.json");
  CHECK_THROWS_AS(write_report(dir), std::runtime_error);
  CHECK(error_of([&] { write_report(dir); }).find(dir + "/plan.json") != std::string::npos);

  write_study(dir);
  write_text(dir + "/jobs/baseline.s0.11111111/result.json", "{\"status\": \"done\", ");
  const std::string e = error_of([&] { write_report(dir); });
  CHECK(e.find("jobs/baseline.s0.11111111/result.json") != std::string::npos);
  CHECK(e.find("malformed JSON") != std::string::npos);

  write_study(dir);
  write_text(dir + "/jobs/4bits.s0.33333333/result.json", R"({"status": "maybe"})");
  CHECK(error_of([&] { write_report(dir); }).find("4bits.s0.33333333/result.json") != std::string::npos);

  write_study(dir);
  write_text(dir + "/jobs/baseline.s1.22222222/run/steps.csv", "step,steps,lr,train_loss\n10,10,0.1,x\n");
  CHECK(error_of([&] { write_report(dir); }).find("baseline.s1.22222222/run/steps.csv:2") != std::string::npos);

  write_study(dir);
  write_text(dir + "/plan.json", R"({"jobs": [{"row": "baseline"}]})");  // no id
  CHECK(error_of([&] { write_report(dir); }).find("plan.json") != std::string::npos);
  fs::remove(dir + "/study.study");
  CHECK(error_of([&] { write_report(dir); }).find("study.study") != std::string::npos);
}
