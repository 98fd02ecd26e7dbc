// octet-run: the engine on its own (links octet_engine only). Classifies raw
// images with an Octet model file.
//
//   octet-run MODEL IMAGES [--batch N] [--threads N] [--top K] [--cifar] [--profile]
//
// IMAGES is a file (or - for stdin) of raw uint8 records of the model's input
// shape, H*W*C bytes each, NHWC. With --cifar the records are the official
// CIFAR-10 binary layout instead (1 label byte, then the R, G and B planes of
// 32x32), e.g. test_batch.bin: the labels are checked and the accuracy printed.
// --profile prints each op's share of the engine's time to stderr at the end.
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace {

const char* kUsage =
    "usage: octet-run MODEL IMAGES [--batch N] [--threads N] [--top K] [--cifar] [--profile]\n"
    "  MODEL       an Octet model file (.oct)\n"
    "  IMAGES      raw uint8 images, H*W*C bytes each in NHWC order ('-' reads stdin)\n"
    "  --batch N   images per engine call (default 100)\n"
    "  --threads N engine threads (default: all cores)\n"
    "  --top K     classes printed per image (default 1)\n"
    "  --cifar     IMAGES is CIFAR-10 binary (label byte + R, G, B planes): print accuracy\n"
    "  --profile   print each op's time per image and share to stderr at the end\n";

struct Options {
  std::string model, images;
  int batch = 100, threads = 0, top = 1;
  bool cifar = false;
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
    } else if (a == "--profile") {
      o.profile = true;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      throw Usage("unknown option '" + a + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) throw Usage("expected MODEL and IMAGES");
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

int run(const Options& o) {
  octet::engine::set_num_threads(o.threads);
  const auto model = octet::engine::Model::load(o.model);
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
  octet::engine::Session session(model, o.batch);
  session.set_profiling(o.profile);
  std::vector<uint8_t> raw(record * o.batch), pixels(image_bytes * o.batch);
  size_t total = 0, correct = 0;
  double seconds = 0;
  try {
    for (;;) {
      const size_t n = read_records(f, record, o.batch, raw.data(), o.images);
      if (n == 0) break;
      std::vector<int> labels(n, -1);
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
        if (o.cifar) {
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
  if (o.cifar)
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
    return run(parse(argc, argv));
  } catch (const Usage& e) {
    std::fprintf(stderr, "octet-run: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "octet-run: error: %s\n", e.what());
    return 1;
  }
}
