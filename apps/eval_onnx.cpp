// apps/eval_onnx.cpp: `octet eval MODEL.onnx`: top-1, top-5, per-class
// precision/recall and the confusion matrix of an ONNX model in ONNX Runtime,
// and with --against MODEL.oct the same images in the Octet engine, compared
// image for image and logit for logit (in steps of the engine's logits grid).
#include "apps/eval_onnx.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/model_io.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "core/npy.h"
#include "core/parallel.h"
#include "engine/engine.h"
#include "nn/metrics.h"
#include "nn/trainer.h"

extern char** environ;

// Set for octet_app in apps/CMakeLists.txt; empty when this file is built some other way.
#ifndef OCTET_SOURCE_DIR
#define OCTET_SOURCE_DIR ""
#endif
#ifndef OCTET_DEFAULT_ORT_DIR
#define OCTET_DEFAULT_ORT_DIR ""
#endif

namespace octet::app {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOrtVersion = "1.31.1";  // the onnxruntime-node version the script is tested with

const char* kUsage = R"(usage: octet eval MODEL.onnx [--data PATH] [options]

Evaluates a model of `octet export --onnx` in ONNX Runtime on a data set split:
top-1, top-5, per-class precision and recall, and the confusion matrix. The
images go in as uint8 NHWC pixels, the bytes the Octet engine takes; the model's
output "logits" comes back as float32. ONNX Runtime is the npm package
onnxruntime-node, run by node in a child process (scripts/ort_run.mjs).

options:
  --data PATH           data set (default: $OCTET_DATA)
  --split test|train    (default test)
  --limit N             a class-mixed sample of N images (seeded, as for .oct models)
  --against MODEL.oct   also run the images in the Octet engine and compare image for image:
                        the engine's top-1 and top-5, the images with the same top-1 class,
                        the images whose logits are equal in every output step, and the
                        largest and mean |logit difference| in output steps (the .oct's
                        logits scale)
  --ort-dir DIR         where onnxruntime-node is installed, as DIR/node_modules/onnxruntime-node
                        (default: $OCTET_ORT_DIR, else the build folder's ort/)
  --ort-precise         ORT's session.x64quantprecision: exact U8U8 kernels instead of U8S8 on x86
                        without VNNI, whose 16-bit pair sums saturate (slower; no effect with VNNI)
  --json FILE           also write the figures as JSON (written atomically)
  --batch N             images per run, in ONNX Runtime and the engine (default 500)
  --threads N           ONNX Runtime's intra-op threads and the engine's (default 0: all cores)

node is taken from PATH; OCTET_ORT_SCRIPT overrides the script's path. To install
ONNX Runtime into DIR:
  ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix DIR onnxruntime-node@1.31.1
(=skip: the package's installer would otherwise fetch CUDA libraries on x86-64 Linux.)
)";

std::string install_hint(const std::string& dir) {
  return "ONNXRUNTIME_NODE_INSTALL=skip npm install --prefix " + dir + " onnxruntime-node@" + kOrtVersion;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

bool ends_with_onnx(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s.size() > 5 && s.compare(s.size() - 5, 5, ".onnx") == 0;
}

// A fresh folder under the system temp dir ($TMPDIR), removed with all it
// holds when this goes out of scope, on errors too.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "octet-eval-onnx-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("cannot create a temporary folder " + tmpl + ": " + std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// The executable `name` in $PATH (as execvp would find it), or "".
std::string find_on_path(const std::string& name) {
  const std::string path = env_or("PATH", "/usr/local/bin:/usr/bin:/bin");
  size_t begin = 0;
  for (;;) {
    const size_t end = path.find(':', begin);
    const std::string dir = path.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    const fs::path candidate = (dir.empty() ? fs::path(".") : fs::path(dir)) / name;  // "" is the current folder
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    if (end == std::string::npos) return "";
    begin = end + 1;
  }
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// Runs args[0] (a path, no shell) with args, the environment inherited, stdin
// from /dev/null and stdout / stderr into the files given. Returns "" on exit
// code 0, else what happened ("exit code 1", "killed by signal ...").
std::string run_child(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
  std::vector<std::string> words = args;
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return "could not start " + args[0] + ": " + std::strerror(rc);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return std::string("waitpid failed: ") + std::strerror(errno);
  if (WIFEXITED(status)) return WEXITSTATUS(status) == 0 ? "" : "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended abnormally";
}

// What the script reports on stdout after a run (one JSON line).
struct OrtSummary {
  double seconds = 0;  // in session.run only
  std::string version, input, output;
  double output_scale = std::nan("");  // the model's metadata_props, when it has them
  long long output_zero_point = 0;  // in int8 codes, as the engine's logits
  bool has_grid = false;
};

OrtSummary parse_summary(const std::string& text) {
  OrtSummary s;
  // The last non-empty line: the script prints one, but node may warn before it.
  std::string line;
  size_t end = text.size();
  while (line.empty() && end > 0) {
    const size_t nl = text.rfind('\n', end - 1);
    const size_t begin = nl == std::string::npos ? 0 : nl + 1;
    line = trim(text.substr(begin, end - begin));
    end = nl == std::string::npos ? 0 : nl;
  }
  try {
    const nlohmann::json j = nlohmann::json::parse(line);
    s.seconds = j.value("seconds", 0.0);
    s.version = j.value("ort_version", "");
    s.input = j.value("input", "");
    s.output = j.value("output", "");
    if (j.contains("metadata") && j["metadata"].contains("octet.output_scale") &&
        j["metadata"].contains("octet.output_zero_point")) {
      s.output_scale = std::stod(j["metadata"]["octet.output_scale"].get<std::string>());
      s.output_zero_point = std::stoll(j["metadata"]["octet.output_zero_point"].get<std::string>());
      // The zero point is in the ONNX model's activation type; the engine's
      // logits are int8, so a uint8 export's is 128 higher for the same grid.
      const auto& md = j["metadata"];
      if (md.contains("octet.activations") && md["octet.activations"].get<std::string>() == "uint8")
        s.output_zero_point -= 128;
      s.has_grid = true;
    }
  } catch (const std::exception&) {
    // The logits file is what counts; a summary that cannot be read only loses the timing.
    std::fprintf(stderr, "note: cannot read ort_run.mjs's summary line: %s\n", line.c_str());
  }
  return s;
}

// Index of the largest logit, the lowest index among equals (nn::Metrics' and
// engine::argmax's rule, so equal logits give equal classes).
int argmax_row(const float* row, int n) {
  int best = 0;
  for (int k = 1; k < n; ++k)
    if (row[k] > row[best]) best = k;
  return best;
}

Tensor logits_tensor(const float* data, int64_t n, int classes) {
  Tensor t = Tensor::empty({n, classes});
  std::copy(data, data + n * classes, t.data());
  return t;
}

}  // namespace

bool is_onnx_eval(int argc, char** argv) {
  // The same parse as the commands' (a token after a flag is that flag's value).
  const Args a(argc, argv, "octet eval", "");
  return !a.positional().empty() && ends_with_onnx(a.positional()[0]);
}

int eval_onnx(int argc, char** argv) {
  Args a(argc, argv, "octet eval", kUsage);
  if (a.help()) {
    std::fputs(a.usage().c_str(), stdout);
    return 0;
  }
  const std::string data = a.get("--data", "");
  const std::string split = a.get("--split", "test");
  const long long limit = a.get_int64("--limit", 0);
  const std::string against = a.get("--against", "");
  const std::string ort_dir_flag = a.get("--ort-dir", "");
  const int batch = a.get_int("--batch", 500);
  const int threads = a.get_int("--threads", 0);
  const std::string json_path = a.get("--json", "");
  const bool precise = a.flag("--ort-precise");
  a.finish();
  const std::string path = a.positional_at(0, "the ONNX model (MODEL.onnx)");
  if (a.positional().size() > 1) throw UsageError("octet eval: one model at a time (" + a.positional()[1] + "?)");
  if (split != "test" && split != "train") throw UsageError("octet eval: --split must be test or train");
  if (batch < 1) throw UsageError("octet eval: --batch must be >= 1");
  if (limit < 0) throw UsageError("octet eval: --limit must be >= 0");
  if (threads < 0) throw UsageError("octet eval: --threads must be >= 0");

  // Everything the child needs, checked before the data are loaded.
  if (!fs::is_regular_file(path)) throw std::runtime_error("cannot open " + path + ": no such file");
  if (!against.empty() && !is_model_file(against))
    throw UsageError("octet eval: --against needs an Octet model file (.oct of octet export); " + against + " is not one");
  const std::string node = find_on_path("node");
  if (node.empty())
    throw std::runtime_error("node not found on PATH: ONNX Runtime runs in Node.js (Debian: apt-get install nodejs)");
  const std::string script = env_or("OCTET_ORT_SCRIPT", std::string(OCTET_SOURCE_DIR) + "/scripts/ort_run.mjs");
  if (!fs::is_regular_file(script))
    throw std::runtime_error("the ONNX Runtime driver " + script + " is missing (set OCTET_ORT_SCRIPT to scripts/ort_run.mjs)");
  const std::string ort_dir = !ort_dir_flag.empty() ? ort_dir_flag : env_or("OCTET_ORT_DIR", OCTET_DEFAULT_ORT_DIR);
  if (ort_dir.empty())
    throw std::runtime_error("no ONNX Runtime folder: give --ort-dir DIR or set OCTET_ORT_DIR, and install it with `" +
                             install_hint("DIR") + "`");
  if (!fs::is_regular_file(fs::path(ort_dir) / "node_modules" / "onnxruntime-node" / "package.json"))
    throw std::runtime_error("ONNX Runtime not found at " + ort_dir + ": install it with `" + install_hint(ort_dir) + "`");

  set_num_threads(threads);
  engine::set_num_threads(threads);
  // 0 is "all cores" for Octet; ONNX Runtime gets the same count, spelled out.
  const int ort_threads = threads > 0 ? threads : engine::num_threads();

  const Dataset all = load_dataset(resolve_data_path(data), split == "test" ? Split::test : Split::train);
  // --limit: a seeded class-mixed sample (image trees are sorted by class), as cmd_eval takes it.
  const Dataset ds = limit > 0 && limit < all.size() ? nn::take_subset(all, limit, 0) : all;
  const int64_t count = ds.size();
  std::printf("%s split of %s: %lld images%s\n", split.c_str(), all.source.c_str(), static_cast<long long>(count),
              count < all.size() ? " (a class-mixed sample, --limit)" : "");
  if (count == 0) throw std::runtime_error("the " + split + " split of " + all.source + " has no images");
  const int classes = ds.num_classes();

  std::shared_ptr<const engine::Model> model;
  if (!against.empty()) {
    model = engine::Model::load(against);
    std::printf("against %s: %s, %d classes, %s weights, %s file\n", against.c_str(), model->name().c_str(),
                model->num_classes(), human_bytes(model->weight_bytes_stored()).c_str(),
                human_bytes(fs::file_size(against)).c_str());
    if (model->num_classes() != classes)
      throw std::runtime_error("the data set has " + std::to_string(classes) + " classes, " + against + " " +
                               std::to_string(model->num_classes()));
    if (ds.channels != model->input_c() || ds.height != model->input_h() || ds.width != model->input_w())
      throw std::runtime_error("the data set's images are " + std::to_string(ds.channels) + "x" +
                               std::to_string(ds.height) + "x" + std::to_string(ds.width) + ", " + against +
                               " takes " + std::to_string(model->input_c()) + "x" + std::to_string(model->input_h()) +
                               "x" + std::to_string(model->input_w()));
  }

  // ONNX Runtime, in a child: pixels.npy in, logits.npy out, in a folder of our own.
  const TempDir tmp;
  const std::vector<uint8_t> pixels = images_nhwc(ds, 0, count);
  const fs::path in_npy = tmp / "pixels.npy", out_npy = tmp / "logits.npy";
  write_npy<uint8_t>(in_npy.string(), {count, ds.height, ds.width, ds.channels}, pixels);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> child = {node, script, "run", path, in_npy.string(), out_npy.string(), "--threads",
                                    std::to_string(ort_threads), "--batch", std::to_string(batch), "--ort-dir", ort_dir};
  if (precise) child.push_back("--precise");
  const std::string failure = run_child(child, tmp / "stdout.txt", tmp / "stderr.txt");
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string child_err = trim(read_text(tmp / "stderr.txt"));
  if (!failure.empty())
    throw std::runtime_error("ONNX Runtime failed on " + path + " (node " + script + ": " + failure + ")" +
                             (child_err.empty() ? std::string() : ":\n" + child_err));
  if (!child_err.empty()) std::fprintf(stderr, "%s\n", child_err.c_str());  // ORT's warnings, if any
  const OrtSummary ort = parse_summary(read_text(tmp / "stdout.txt"));
  const NpyArray<float> logits = read_npy<float>(out_npy.string());
  if (logits.shape.size() != 2 || logits.shape[0] != count || logits.shape[1] != classes)
    throw std::runtime_error(path + ": ONNX Runtime gave logits of shape [" +
                             (logits.shape.empty() ? std::string() : std::to_string(logits.shape[0])) +
                             (logits.shape.size() > 1 ? ", " + std::to_string(logits.shape[1]) : std::string()) +
                             "], the data set needs [" + std::to_string(count) + ", " + std::to_string(classes) + "]");

  std::printf("model %s: ONNX Runtime %s (onnxruntime-node), input \"%s\", output \"%s\", %s file", path.c_str(),
              ort.version.c_str(), ort.input.c_str(), ort.output.c_str(), human_bytes(fs::file_size(path)).c_str());
  if (ort.has_grid) std::printf(", logits grid %.9g * (q - %lld) in int8 codes", ort.output_scale, ort.output_zero_point);
  std::printf("\n");
  std::printf("onnxruntime: %lld images in %.2f s of session.run (%.0f img/s, batch %d, threads %d%s; %.2f s with node's start)\n",
              static_cast<long long>(count), ort.seconds, static_cast<double>(count) / std::max(ort.seconds, 1e-9), batch,
              ort_threads, precise ? ", x64quantprecision" : "", wall_s);

  const std::span<const int> labels(ds.labels.data(), static_cast<size_t>(count));
  nn::Metrics metrics(classes);
  metrics.add(logits_tensor(logits.data.data(), count, classes), labels);

  nlohmann::ordered_json j;
  j["path"] = path;
  j["mode"] = "onnxruntime";
  j["split"] = split;
  j["images"] = metrics.count();
  j["top1"] = metrics.top1();
  j["top5"] = metrics.top5();
  j["class_names"] = ds.class_names;
  j["model_file_bytes"] = fs::file_size(path);
  j["onnxruntime"] = {{"version", ort.version},     {"seconds", ort.seconds}, {"batch", batch},
                      {"threads", ort_threads},     {"precise", precise},
                      {"img_per_s", static_cast<double>(count) / std::max(ort.seconds, 1e-9)}};

  if (model) {
    // The same pixels, in the engine; int8 logits kept for the step-by-step comparison.
    const engine::TensorDesc& out = model->desc().tensors[model->desc().output];
    if (!(out.scale > 0)) throw std::runtime_error(against + " does not store its logits' scale: nothing to compare in steps");
    engine::Session session(model, static_cast<int>(std::min<int64_t>(batch, count)));
    std::vector<int8_t> q(static_cast<size_t>(count) * classes);
    const size_t per_image = model->input_bytes();
    double engine_s = 0;
    for (int64_t start = 0; start < count; start += batch) {
      const int n = static_cast<int>(std::min<int64_t>(batch, count - start));
      const auto e0 = std::chrono::steady_clock::now();
      const std::span<const int8_t> e = session.run(pixels.data() + static_cast<size_t>(start) * per_image, n);
      engine_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();
      std::copy(e.begin(), e.end(), q.begin() + start * classes);
    }
    std::printf("engine: %s, %lld images in %.2f s (%.0f img/s, batch %d)\n", engine::isa_name(session.isa()),
                static_cast<long long>(count), engine_s, static_cast<double>(count) / std::max(engine_s, 1e-9), batch);
    if (ort.has_grid && (ort.output_zero_point != out.zero_point ||
                         std::abs(ort.output_scale - out.scale) > 1e-6 * std::abs(static_cast<double>(out.scale))))
      std::printf("note: %s's logits grid (octet.output_scale %.9g, zero point %lld) is not %s's (%.9g, %d): "
                  "another model?\n",
                  path.c_str(), ort.output_scale, ort.output_zero_point, against.c_str(), static_cast<double>(out.scale),
                  static_cast<int>(out.zero_point));

    // The engine's logits as ONNX's DequantizeLinear forms them from the same
    // codes: (q - zero point) * scale in float32. Equal codes give equal floats.
    const float out_scale = static_cast<float>(out.scale);
    auto engine_logit = [&](int8_t code) { return static_cast<float>(code - out.zero_point) * out_scale; };
    std::vector<float> engine_real(q.size());
    for (size_t i = 0; i < q.size(); ++i) engine_real[i] = engine_logit(q[i]);
    nn::Metrics engine_metrics(classes);
    engine_metrics.add(logits_tensor(engine_real.data(), count, classes), labels);

    // Differences in steps of the engine's logits grid: real difference / s_out.
    // ONNX logits dequantized from the same int8 grid differ by whole steps
    // (0 for equal codes), so |d| < 0.5 is "the same step".
    int64_t same_top1 = 0, equal = 0;
    double max_steps = 0, sum_steps = 0;
    for (int64_t i = 0; i < count; ++i) {
      const float* o = logits.data.data() + i * classes;
      const std::span<const int8_t> row(q.data() + i * classes, static_cast<size_t>(classes));
      same_top1 += argmax_row(o, classes) == engine::argmax(row);
      bool all_equal = true;
      for (int k = 0; k < classes; ++k) {
        double d = std::abs((static_cast<double>(o[k]) - engine_logit(row[k])) / out.scale);
        if (!std::isfinite(d)) d = std::numeric_limits<double>::infinity();  // NaN from ORT: never equal
        all_equal = all_equal && d < 0.5;
        max_steps = std::max(max_steps, d);
        sum_steps += d;
      }
      equal += all_equal;
    }
    const double mean_steps = sum_steps / static_cast<double>(count * classes);
    std::printf("engine: top-1 %.2f%%, top-5 %.2f%%\n", 100.0 * engine_metrics.top1(), 100.0 * engine_metrics.top5());
    std::printf("ONNX Runtime against the engine, image for image:\n");
    std::printf("  same top-1 class:                  %lld of %lld images (%.2f%%)\n", static_cast<long long>(same_top1),
                static_cast<long long>(count), 100.0 * static_cast<double>(same_top1) / static_cast<double>(count));
    std::printf("  logits equal in every output step: %lld of %lld images\n", static_cast<long long>(equal),
                static_cast<long long>(count));
    std::printf("  |logit difference| in output steps (scale %.9g): max %.4g, mean %.4g\n", static_cast<double>(out.scale),
                max_steps, mean_steps);
    j["against"] = {{"path", against},
                    {"engine_isa", engine::isa_name(session.isa())},
                    {"engine_img_per_s", static_cast<double>(count) / std::max(engine_s, 1e-9)},
                    {"top1", engine_metrics.top1()},
                    {"top5", engine_metrics.top5()},
                    {"same_top1", same_top1},
                    {"same_top1_fraction", static_cast<double>(same_top1) / static_cast<double>(count)},
                    {"equal_logits", equal},
                    {"max_abs_diff_steps", max_steps},
                    {"mean_abs_diff_steps", mean_steps},
                    {"output_scale", static_cast<double>(out.scale)},
                    {"output_zero_point", static_cast<int>(out.zero_point)}};
  }
  if (!json_path.empty()) {
    const std::string text = j.dump(1) + "\n";
    write_file_atomic(json_path, text.data(), text.size());
  }
  std::printf("\n");
  std::fputs(metrics.report(ds.class_names).c_str(), stdout);
  return 0;
}

}  // namespace octet::app
