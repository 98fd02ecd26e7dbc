// octet-run: the engine on its own (links octet_engine only). Classifies raw
// images with an Octet model file.
//
//   octet-run MODEL IMAGES [--batch N] [--threads N] [--top K] [--cifar | --idx [--labels FILE]] [--profile]
//
// IMAGES is a file (or - for stdin) of raw uint8 records of the model's input
// shape, H*W*C bytes each, NHWC: whatever shape the model was trained on
// (28x28x1 for Fashion-MNIST). With --cifar the records are the official
// CIFAR-10 binary layout instead (1 label byte, then the R, G and B planes of
// 32x32), e.g. test_batch.bin: the labels are checked and the accuracy printed.
// With --idx IMAGES is an uncompressed IDX image file of MNIST or
// Fashion-MNIST (magic 0x00000803, then count, rows, columns, big-endian; the
// engine links no zlib, so gunzip a .gz first): its header must say the
// model's input size and the model must take one channel; --labels names the
// matching IDX label file (0x00000801) for the accuracy. No image is ever
// resized: another shape is an error naming both.
// --profile prints each op's share of the engine's time to stderr at the end.
//
//   octet-run --write-sample-model FILE
//
// writes a ResNet-20 for 32x32x3 images with random weights (random_resnet of
// engine/samples.h, seed 1) to FILE: a model to try the engine and its
// examples with when there is no trained one, e.g. in an engine-only build
// (scripts/ci_install.sh).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/samples.h"

namespace {

const char* kUsage =
    "usage: octet-run MODEL IMAGES [--batch N] [--threads N] [--top K] [--cifar | --idx [--labels F]] [--profile]\n"
    "  MODEL       an Octet model file (.oct)\n"
    "  IMAGES      raw uint8 images, H*W*C bytes each in NHWC order ('-' reads stdin)\n"
    "  --batch N   images per engine call (default 100)\n"
    "  --threads N engine threads (default: all cores)\n"
    "  --top K     classes printed per image (default 1)\n"
    "  --cifar     IMAGES is CIFAR-10 binary (label byte + R, G, B planes): print accuracy\n"
    "  --idx       IMAGES is an uncompressed IDX image file (MNIST, Fashion-MNIST: gunzip it first)\n"
    "  --labels F  with --idx: the IDX label file of those images: print accuracy\n"
    "  --profile   print each op's time per image and share to stderr at the end\n"
    "   or: octet-run --write-sample-model FILE\n"
    "  writes a ResNet-20 (32x32x3, 10 classes) with random weights to FILE\n";

struct Options {
  std::string model, images;
  int batch = 100, threads = 0, top = 1;
  bool cifar = false;
  bool idx = false;
  std::string labels;  // --idx: the IDX label file
  bool profile = false;
};

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int parse_int(const char* flag, const char* value, int lo, int hi) {
  if (!value) throw Usage(std::string(flag) + " needs a value");
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  if (*value == '\0' || *end != '\0' || v < lo || v > hi)
    throw Usage(std::string(flag) + ": '" + value + "' is not an integer in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "]");
  return static_cast<int>(v);
}

Options parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--batch") {
      o.batch = parse_int("--batch", next, 1, 1 << 16), ++i;
    } else if (a == "--threads") {
      o.threads = parse_int("--threads", next, 0, 1024), ++i;
    } else if (a == "--top") {
      o.top = parse_int("--top", next, 1, 1 << 20), ++i;
    } else if (a == "--cifar") {
      o.cifar = true;
    } else if (a == "--idx") {
      o.idx = true;
    } else if (a == "--labels") {
      if (!next) throw Usage("--labels needs a value");
      o.labels = next, ++i;
    } else if (a == "--profile") {
      o.profile = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      throw Usage("unknown option '" + a + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) throw Usage("expected MODEL and IMAGES");
  if (o.cifar && o.idx) throw Usage("--cifar and --idx exclude each other");
  if (!o.labels.empty() && !o.idx) throw Usage("--labels goes with --idx");
  o.model = positional[0];
  o.images = positional[1];
  return o;
}

// Reads up to `count` records of `size` bytes; returns how many were read.
// A partial record at the end of the input is an error.
size_t read_records(std::FILE* f, size_t size, size_t count, uint8_t* out, const std::string& name) {
  const size_t got = std::fread(out, 1, size * count, f);
  if (std::ferror(f)) throw std::runtime_error(name + ": read error");
  if (got % size != 0)
    throw std::runtime_error(name + ": ends with a partial record of " + std::to_string(got % size) + " bytes (records are " +
                             std::to_string(size) + " bytes)");
  return got / size;
}

uint32_t be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", static_cast<unsigned>(v));
  return buf;
}

// Reads `n` header bytes of an IDX file and checks its magic; a gzip file is
// named as such (the engine reads plain IDX only).
std::vector<uint8_t> idx_header(std::FILE* f, const std::string& name, uint32_t magic, size_t n, const char* what) {
  std::vector<uint8_t> h(n);
  const size_t got = std::fread(h.data(), 1, n, f);
  if (std::ferror(f)) throw std::runtime_error(name + ": read error");
  if (got >= 2 && h[0] == 0x1f && h[1] == 0x8b)
    throw std::runtime_error(name + ": gzip-compressed; octet-run reads plain IDX files (gunzip it first)");
  if (got < 4 || be32(h.data()) != magic)
    throw std::runtime_error(name + ": bad magic number " + (got < 4 ? std::string("(file too short)") : hex32(be32(h.data()))) +
                             ", expected " + hex32(magic) + " (IDX " + what + ")");
  if (got < n)
    throw std::runtime_error(name + ": truncated IDX header (" + std::to_string(got) + " of " + std::to_string(n) + " bytes)");
  return h;
}

// An IDX label file, whole: `count` labels, each below `classes`.
std::vector<int> read_idx_labels(const std::string& name, uint32_t count, int classes) {
  std::FILE* f = std::fopen(name.c_str(), "rb");
  if (!f) throw std::runtime_error(name + ": cannot open: " + std::strerror(errno));
  std::vector<uint8_t> bytes;
  try {
    const std::vector<uint8_t> h = idx_header(f, name, 0x00000801, 8, "labels");
    if (be32(h.data() + 4) != count)
      throw std::runtime_error(name + " holds " + std::to_string(be32(h.data() + 4)) + " labels, the images " +
                               std::to_string(count) + ": the counts must be equal");
    bytes.resize(static_cast<size_t>(count) + 1);  // one more, to see trailing bytes
    const size_t got = std::fread(bytes.data(), 1, bytes.size(), f);
    if (std::ferror(f)) throw std::runtime_error(name + ": read error");
    if (got != count)
      throw std::runtime_error(name + ": " + std::to_string(got) + (got < count ? "" : "+") + " label bytes after the header, which says " +
                               std::to_string(count) + (got < count ? ": the file is truncated" : ": extra bytes at the end"));
  } catch (...) {
    std::fclose(f);
    throw;
  }
  std::fclose(f);
  std::vector<int> labels(count);
  for (uint32_t i = 0; i < count; ++i) {
    labels[i] = bytes[i];
    if (labels[i] >= classes)
      throw std::runtime_error(name + ": label " + std::to_string(i) + " is " + std::to_string(labels[i]) + ", the model has " +
                               std::to_string(classes) + " classes");
  }
  return labels;
}

int run(const Options& o) {
  octet::engine::set_num_threads(o.threads);
  octet::engine::ModelOptions load_options;
  load_options.inference_only = true;  // the weights once, packed: this program only runs the model
  const auto model = octet::engine::Model::load(o.model, load_options);
  const size_t image_bytes = model->input_bytes();
  const int h = model->input_h(), w = model->input_w(), c = model->input_c();
  if (o.cifar && (h != 32 || w != 32 || c != 3))
    throw std::runtime_error(o.model + ": --cifar needs a 32x32x3 input, the model takes " + std::to_string(h) + "x" +
                             std::to_string(w) + "x" + std::to_string(c));
  const size_t record = o.cifar ? 1 + image_bytes : image_bytes;
  const int classes = model->num_classes();
  const std::vector<std::string> names = model->class_names();

  std::FILE* f = o.images == "-" ? stdin : std::fopen(o.images.c_str(), "rb");
  if (!f) throw std::runtime_error(o.images + ": cannot open: " + std::strerror(errno));
  // --idx: the header says how many images follow and their size, which must
  // be the model's input (never resized); the labels, when given, are read whole.
  size_t idx_left = 0;
  std::vector<int> idx_labels;
  if (o.idx) {
    try {
      const std::vector<uint8_t> hdr = idx_header(f, o.images, 0x00000803, 16, "images");
      const uint32_t count = be32(hdr.data() + 4), rows = be32(hdr.data() + 8), cols = be32(hdr.data() + 12);
      if (static_cast<int64_t>(rows) != h || static_cast<int64_t>(cols) != w || c != 1)
        throw std::runtime_error(o.images + ": its images are " + std::to_string(cols) + "x" + std::to_string(rows) +
                                 " (1 channel), " + o.model + " takes " + std::to_string(w) + "x" + std::to_string(h) + " (" +
                                 std::to_string(c) + (c == 1 ? " channel)" : " channels)"));
      idx_left = count;
      if (!o.labels.empty()) idx_labels = read_idx_labels(o.labels, count, classes);
    } catch (...) {
      if (f != stdin) std::fclose(f);
      throw;
    }
  }
  octet::engine::Session session(model, o.batch);
  session.set_profiling(o.profile);
  std::vector<uint8_t> raw(record * o.batch), pixels(image_bytes * o.batch);
  size_t total = 0, correct = 0;
  double seconds = 0;
  try {
    for (;;) {
      const size_t want = o.idx ? std::min<size_t>(o.batch, idx_left) : static_cast<size_t>(o.batch);
      const size_t n = want ? read_records(f, record, want, raw.data(), o.images) : 0;
      if (o.idx && n < want)
        throw std::runtime_error(o.images + ": truncated: " + std::to_string(total + n) + " images, its header says " +
                                 std::to_string(total + idx_left));
      if (o.idx) idx_left -= n;
      if (o.idx && n == 0 && std::fgetc(f) != EOF)
        throw std::runtime_error(o.images + ": extra bytes after the " + std::to_string(total) + " images its header says");
      if (n == 0) break;
      std::vector<int> labels(n, -1);
      if (!idx_labels.empty())
        for (size_t i = 0; i < n; ++i) labels[i] = idx_labels[total + i];
      const uint8_t* px = raw.data();
      if (o.cifar) {  // label + CHW planes -> HWC
        for (size_t i = 0; i < n; ++i) {
          const uint8_t* r = raw.data() + i * record;
          labels[i] = r[0];
          if (labels[i] >= classes)
            throw std::runtime_error(o.images + ": record " + std::to_string(total + i) + " has label " +
                                     std::to_string(labels[i]) + ", the model has " + std::to_string(classes) + " classes");
          for (int p = 0; p < h * w; ++p)
            for (int ch = 0; ch < c; ++ch) pixels[i * image_bytes + p * c + ch] = r[1 + ch * h * w + p];
        }
        px = pixels.data();
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto logits = session.run(px, static_cast<int>(n));
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (size_t i = 0; i < n; ++i) {
        const auto row = logits.subspan(i * classes, classes);
        if (o.cifar || !idx_labels.empty()) {
          correct += octet::engine::argmax(row) == labels[i];
          continue;
        }
        std::printf("%zu", total + i);
        for (const auto& s : octet::engine::top_k(row, o.top))
          std::printf("  %d %s %.3f", s.index, s.index < static_cast<int>(names.size()) ? names[s.index].c_str() : "-",
                      model->logit_real(s.value));
        std::printf("\n");
      }
      total += n;
    }
  } catch (...) {
    if (f != stdin) std::fclose(f);
    throw;
  }
  if (f != stdin) std::fclose(f);
  if (o.cifar || !idx_labels.empty())
    std::printf("accuracy %.4f (%zu/%zu)\n", total ? static_cast<double>(correct) / total : 0.0, correct, total);
  std::fprintf(stderr, "octet-run: %zu images in %.3f s (%.1f img/s, isa %s, %d threads, arena %zu bytes)\n", total,
               seconds, seconds > 0 ? total / seconds : 0.0, octet::engine::isa_name(session.isa()),
               octet::engine::num_threads(), session.arena_bytes());
  if (o.profile) std::fprintf(stderr, "%s", octet::engine::profile_table(*model, session.profile()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (!std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help"))) {
    std::printf("%s", kUsage);
    return 0;
  }
  try {
    if (argc >= 2 && !std::strcmp(argv[1], "--write-sample-model")) {
      if (argc != 3) throw Usage("--write-sample-model needs exactly one FILE");
      octet::engine::random_resnet({}).write(argv[2]);
      return 0;
    }
    return run(parse(argc, argv));
  } catch (const Usage& e) {
    std::fprintf(stderr, "octet-run: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "octet-run: error: %s\n", e.what());
    return 1;
  }
}
