// The C API (engine/octet_engine.h), called from C++ and checked against the
// C++ API it wraps: the same shapes, quantization, names and, byte for byte,
// the same logits; then every error path (each NULL argument, a missing file,
// corrupted bytes, wrong sizes and counts), each with its status and a
// message naming the problem, and a successful call after every failure.
// (tests/engine/test_c_api_c.c checks that the header compiles as C.)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "engine/builder.h"
#include "engine/engine.h"
#include "engine/octet_engine.h"
#include "engine/samples.h"

using namespace octet::engine;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;

bool contains(const char* text, const std::string& part) { return std::string(text).find(part) != std::string::npos; }

// A call that must fail with status `want` and leave a last-error message
// containing `part` (statuses compared by name, so a failure reads well).
#define CHECK_FAILS(call, want, part)                                                  \
  do {                                                                                 \
    const int status_ = (call);                                                        \
    CHECK(std::string(octet_status_name(status_)) == octet_status_name(want));         \
    CHECK_MESSAGE(contains(octet_last_error(), part), "last error: ", octet_last_error()); \
  } while (0)

// A call that must succeed, and then leave no message behind.
#define CHECK_OK(call)                                                                  \
  do {                                                                                  \
    const int status_ = (call);                                                         \
    CHECK_MESSAGE(status_ == OCTET_OK, octet_status_name(status_), ": ", octet_last_error()); \
    CHECK(std::string(octet_last_error()).empty());                                     \
  } while (0)

Bytes random_pixels(size_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  Bytes px(n);
  for (auto& p : px) p = static_cast<uint8_t>(gen());
  return px;
}

void write_bytes(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("octet_c_api_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

// A model small enough to compute by hand (engine/samples.h), with no
// model_name and no class names.
ModelBuilder bare_model() { return hand_model(); }

// Every query of the C API against engine::Model's answer.
void check_model_matches(const OctetModel* h, const Model& m) {
  int height = 0, width = 0, channels = 0;
  CHECK_OK(octet_model_input_shape(h, &height, &width, &channels));
  CHECK(height == m.input_h());
  CHECK(width == m.input_w());
  CHECK(channels == m.input_c());
  size_t bytes = 0;
  CHECK_OK(octet_model_input_bytes(h, &bytes));
  CHECK(bytes == m.input_bytes());

  const TensorDesc& in = m.desc().tensors[m.desc().input];
  double scale = -1;
  int32_t zp = -1;
  OctetDType dtype = OCTET_DTYPE_INT8;
  CHECK_OK(octet_model_input_quant(h, &scale, &zp, &dtype));
  CHECK(scale == in.scale);
  CHECK(zp == in.zero_point);
  CHECK(dtype == OCTET_DTYPE_UINT8);

  int classes = 0;
  CHECK_OK(octet_model_num_classes(h, &classes));
  CHECK(classes == m.num_classes());
  const TensorDesc& out = m.desc().tensors[m.desc().output];
  dtype = OCTET_DTYPE_UINT8;
  CHECK_OK(octet_model_output_quant(h, &scale, &zp, &dtype));
  CHECK(scale == out.scale);
  CHECK(zp == out.zero_point);
  CHECK(dtype == OCTET_DTYPE_INT8);

  const std::vector<std::string> names = m.class_names();
  for (int i = 0; i < classes; ++i) {
    const char* name = "unset";
    CHECK_OK(octet_model_class_name(h, i, &name));
    if (names.empty()) {
      CHECK(name == nullptr);
    } else {
      REQUIRE(name != nullptr);
      CHECK(name == names[static_cast<size_t>(i)]);
    }
  }
  const char* model_name = nullptr;
  CHECK_OK(octet_model_name(h, &model_name));
  REQUIRE(model_name != nullptr);
  CHECK(model_name == m.name());
}

// The C API's int8 and float logits of `count` images against Session::run.
void check_run_matches(OctetSession* s, const std::shared_ptr<const Model>& m, int count, uint64_t seed) {
  const Bytes px = random_pixels(m->input_bytes() * static_cast<size_t>(count), seed);
  Session ref(m, count);
  const auto want = ref.run(px.data(), count);
  const size_t n = want.size();
  REQUIRE(n == static_cast<size_t>(count * m->num_classes()));

  // A larger buffer than needed is fine; what lies past the logits is untouched.
  std::vector<int8_t> got(n + 3, 77);
  CHECK_OK(octet_session_run(s, px.data(), px.size(), count, got.data(), got.size()));
  CHECK(std::equal(want.begin(), want.end(), got.begin()));
  CHECK(std::all_of(got.begin() + static_cast<std::ptrdiff_t>(n), got.end(), [](int8_t v) { return v == 77; }));

  std::vector<float> real(n + 1, -1.5f);
  CHECK_OK(octet_session_run_float(s, px.data(), px.size(), count, real.data(), real.size()));
  const TensorDesc& out = m->desc().tensors[m->desc().output];
  for (size_t i = 0; i < n; ++i) {
    CHECK(real[i] == static_cast<float>(out.scale * (static_cast<int32_t>(want[i]) - out.zero_point)));
    CHECK(real[i] == static_cast<float>(m->logit_real(want[i])));
  }
  CHECK(real[n] == -1.5f);
}

}  // namespace

TEST_CASE("the version: the header's, the library's and CMake's agree") {
  std::ostringstream parts;
  parts << OCTET_ENGINE_VERSION_MAJOR << '.' << OCTET_ENGINE_VERSION_MINOR << '.' << OCTET_ENGINE_VERSION_PATCH;
  CHECK(parts.str() == OCTET_ENGINE_VERSION_STRING);
  REQUIRE(octet_engine_version() != nullptr);
  CHECK(std::string(octet_engine_version()) == OCTET_ENGINE_VERSION_STRING);
  // The project version of the top-level CMakeLists.txt, "project(Octet VERSION x.y.z ...".
  std::ifstream cmake(std::string(OCTET_SOURCE_DIR) + "/CMakeLists.txt");
  REQUIRE(cmake.good());
  std::string line, version;
  const std::string key = "project(Octet VERSION ";
  while (std::getline(cmake, line))
    if (line.rfind(key, 0) == 0) version = line.substr(key.size(), line.find_first_of(" )", key.size()) - key.size());
  CHECK(version == OCTET_ENGINE_VERSION_STRING);
}

TEST_CASE("status codes are distinct and named; the last error starts empty") {
  const int all[] = {OCTET_OK,
                     OCTET_ERROR_INVALID_ARGUMENT,
                     OCTET_ERROR_IO,
                     OCTET_ERROR_BAD_MODEL,
                     OCTET_ERROR_SIZE_MISMATCH,
                     OCTET_ERROR_OUT_OF_MEMORY,
                     OCTET_ERROR_INTERNAL};
  std::set<int> codes;
  std::set<std::string> names;
  for (int s : all) {
    codes.insert(s);
    names.insert(octet_status_name(s));
    if (s != OCTET_OK) CHECK(s < 0);
  }
  CHECK(codes.size() == std::size(all));
  CHECK(names.size() == std::size(all));
  CHECK(std::string(octet_status_name(OCTET_ERROR_IO)) == "OCTET_ERROR_IO");
  CHECK(std::string(octet_status_name(42)) == "unknown status");
  std::thread([] { CHECK(std::string(octet_last_error()).empty()); }).join();
}

TEST_CASE("a model from memory (both variants) and from a file answers as engine::Model does") {
  const ModelBuilder b = tiny_model(3);
  Bytes bytes = b.serialize();
  const auto model = Model::from_bytes(bytes, "tiny.oct");
  TempDir dir;
  const std::string path = (dir.path / "tiny.oct").string();
  b.write(path);

  OctetModel* from_copy = nullptr;
  OctetModel* from_view = nullptr;
  OctetModel* from_file = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), "tiny.oct", &from_copy));
  CHECK_OK(octet_model_open_memory_nocopy(bytes.data(), bytes.size(), nullptr, &from_view));
  CHECK_OK(octet_model_open_file(path.c_str(), &from_file));
  REQUIRE(from_copy != nullptr);
  REQUIRE(from_view != nullptr);
  REQUIRE(from_file != nullptr);
  for (const OctetModel* h : {from_copy, from_view, from_file}) check_model_matches(h, *model);
  const char* name = nullptr;
  CHECK_OK(octet_model_name(from_file, &name));
  CHECK(std::string(name) == "tiny");  // the metadata's model_name, not the path

  // The copying variant does not need the bytes after the call: overwrite
  // them, and its session still computes the model's logits.
  octet_model_free(from_view);  // the no-copy one must not outlive its bytes
  std::fill(bytes.begin(), bytes.end(), uint8_t{0xA5});
  for (OctetModel* h : {from_copy, from_file}) {
    OctetSession* s = nullptr;
    CHECK_OK(octet_session_create(h, 4, &s));
    REQUIRE(s != nullptr);
    int max_batch = 0;
    CHECK_OK(octet_session_max_batch(s, &max_batch));
    CHECK(max_batch == 4);
    check_run_matches(s, model, 4, 10);
    octet_session_free(s);
  }
  octet_model_free(from_copy);
  octet_model_free(from_file);
  octet_model_free(nullptr);    // allowed, as free(NULL)
  octet_session_free(nullptr);  // likewise
}

TEST_CASE("a model without model_name or class names: the source's name, NULL class names") {
  const Bytes bytes = bare_model().serialize();
  const auto model = Model::from_bytes(bytes, "<memory>");
  OctetModel* h = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), nullptr, &h));
  check_model_matches(h, *model);
  const char* name = nullptr;
  CHECK_OK(octet_model_name(h, &name));
  CHECK(std::string(name) == "<memory>");
  const char* cls = "unset";
  CHECK_OK(octet_model_class_name(h, 1, &cls));
  CHECK(cls == nullptr);
  octet_model_free(h);

  TempDir dir;
  const std::string path = (dir.path / "bare.oct").string();
  write_bytes(path, bytes);
  CHECK_OK(octet_model_open_file(path.c_str(), &h));
  CHECK_OK(octet_model_name(h, &name));
  CHECK(name == path);
  octet_model_free(h);
}

TEST_CASE("runs: int8 logits byte for byte as Session::run, float = scale * (q - zp), every count") {
  const ModelBuilder b = tiny_model(8);
  const Bytes bytes = b.serialize();
  const auto model = Model::from_bytes(bytes);
  OctetModel* h = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), nullptr, &h));
  OctetSession* s = nullptr;
  CHECK_OK(octet_session_create(h, 6, &s));
  for (int count : {6, 1, 3, 6}) {
    INFO("count " << count);
    check_run_matches(s, model, count, 100 + static_cast<uint64_t>(count));
  }
  octet_session_free(s);

  // A ResNet (10 classes, zero point 0 logits), and a session that outlives
  // the model handle it was made from.
  ResNetSpec spec;
  spec.blocks_per_stage = 1;
  spec.width = 4;
  spec.image = 16;
  const Bytes rn = random_resnet(spec).serialize();
  const auto rn_model = Model::from_bytes(rn);
  octet_model_free(h);
  CHECK_OK(octet_model_open_memory(rn.data(), rn.size(), nullptr, &h));
  CHECK_OK(octet_session_create(h, 3, &s));
  octet_model_free(h);
  check_run_matches(s, rn_model, 3, 5);
  check_run_matches(s, rn_model, 1, 6);
  octet_session_free(s);
}

TEST_CASE("threads and ISA: process-wide settings, the same logits") {
  const Bytes bytes = tiny_model(9).serialize();
  const auto model = Model::from_bytes(bytes);
  OctetModel* h = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), nullptr, &h));
  OctetSession* s = nullptr;
  CHECK_OK(octet_session_create(h, 5, &s));
  CHECK(std::string(octet_isa_name()) == isa_name(best_isa()));
  int threads = 0;
  for (int t : {1, 2, 3}) {
    CHECK_OK(octet_set_num_threads(t));
    CHECK_OK(octet_get_num_threads(&threads));
    CHECK(threads == t);
    CHECK(num_threads() == t);
    check_run_matches(s, model, 5, 40);
  }
  CHECK_OK(octet_set_num_threads(0));  // all cores, the default
  CHECK_OK(octet_get_num_threads(&threads));
  CHECK(threads >= 1);
  CHECK_FAILS(octet_get_num_threads(nullptr), OCTET_ERROR_INVALID_ARGUMENT, "octet_get_num_threads: threads is NULL");
  octet_session_free(s);
  octet_model_free(h);
}

TEST_CASE("errors: every NULL argument, and handles set to NULL on failure") {
  const Bytes bytes = tiny_model(2).serialize();
  OctetModel* h = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), nullptr, &h));
  OctetSession* s = nullptr;
  CHECK_OK(octet_session_create(h, 2, &s));
  const int inv = OCTET_ERROR_INVALID_ARGUMENT;
  int dummy = 0;
  OctetModel* const junk_model = reinterpret_cast<OctetModel*>(&dummy);
  OctetSession* const junk_session = reinterpret_cast<OctetSession*>(&dummy);

  OctetModel* out = junk_model;
  CHECK_FAILS(octet_model_open_file(nullptr, &out), inv, "octet_model_open_file: path is NULL");
  CHECK(out == nullptr);
  CHECK_FAILS(octet_model_open_file("x.oct", nullptr), inv, "octet_model_open_file: out_model is NULL");
  out = junk_model;
  CHECK_FAILS(octet_model_open_memory(nullptr, 10, nullptr, &out), inv, "octet_model_open_memory: data is NULL");
  CHECK(out == nullptr);
  CHECK_FAILS(octet_model_open_memory(bytes.data(), bytes.size(), nullptr, nullptr), inv,
              "octet_model_open_memory: out_model is NULL");
  out = junk_model;
  CHECK_FAILS(octet_model_open_memory_nocopy(nullptr, 10, nullptr, &out), inv,
              "octet_model_open_memory_nocopy: data is NULL");
  CHECK(out == nullptr);
  CHECK_FAILS(octet_model_open_memory_nocopy(bytes.data(), bytes.size(), nullptr, nullptr), inv,
              "octet_model_open_memory_nocopy: out_model is NULL");

  int i = 0;
  size_t z = 0;
  double d = 0;
  int32_t zp = 0;
  OctetDType t = OCTET_DTYPE_INT8;
  const char* str = nullptr;
  CHECK_FAILS(octet_model_input_shape(nullptr, &i, &i, &i), inv, "octet_model_input_shape: model is NULL");
  CHECK_FAILS(octet_model_input_shape(h, nullptr, &i, &i), inv, "octet_model_input_shape: height is NULL");
  CHECK_FAILS(octet_model_input_shape(h, &i, nullptr, &i), inv, "octet_model_input_shape: width is NULL");
  CHECK_FAILS(octet_model_input_shape(h, &i, &i, nullptr), inv, "octet_model_input_shape: channels is NULL");
  CHECK_FAILS(octet_model_input_bytes(nullptr, &z), inv, "octet_model_input_bytes: model is NULL");
  CHECK_FAILS(octet_model_input_bytes(h, nullptr), inv, "octet_model_input_bytes: bytes_per_image is NULL");
  CHECK_FAILS(octet_model_input_quant(nullptr, &d, &zp, &t), inv, "octet_model_input_quant: model is NULL");
  CHECK_FAILS(octet_model_input_quant(h, nullptr, &zp, &t), inv, "octet_model_input_quant: scale is NULL");
  CHECK_FAILS(octet_model_input_quant(h, &d, nullptr, &t), inv, "octet_model_input_quant: zero_point is NULL");
  CHECK_FAILS(octet_model_input_quant(h, &d, &zp, nullptr), inv, "octet_model_input_quant: dtype is NULL");
  CHECK_FAILS(octet_model_num_classes(nullptr, &i), inv, "octet_model_num_classes: model is NULL");
  CHECK_FAILS(octet_model_num_classes(h, nullptr), inv, "octet_model_num_classes: num_classes is NULL");
  CHECK_FAILS(octet_model_output_quant(nullptr, &d, &zp, &t), inv, "octet_model_output_quant: model is NULL");
  CHECK_FAILS(octet_model_output_quant(h, nullptr, &zp, &t), inv, "octet_model_output_quant: scale is NULL");
  CHECK_FAILS(octet_model_output_quant(h, &d, nullptr, &t), inv, "octet_model_output_quant: zero_point is NULL");
  CHECK_FAILS(octet_model_output_quant(h, &d, &zp, nullptr), inv, "octet_model_output_quant: dtype is NULL");
  CHECK_FAILS(octet_model_class_name(nullptr, 0, &str), inv, "octet_model_class_name: model is NULL");
  CHECK_FAILS(octet_model_class_name(h, 0, nullptr), inv, "octet_model_class_name: name is NULL");
  CHECK_FAILS(octet_model_name(nullptr, &str), inv, "octet_model_name: model is NULL");
  CHECK_FAILS(octet_model_name(h, nullptr), inv, "octet_model_name: name is NULL");

  OctetSession* out_s = junk_session;
  CHECK_FAILS(octet_session_create(nullptr, 1, &out_s), inv, "octet_session_create: model is NULL");
  CHECK(out_s == nullptr);
  CHECK_FAILS(octet_session_create(h, 1, nullptr), inv, "octet_session_create: out_session is NULL");
  CHECK_FAILS(octet_session_max_batch(nullptr, &i), inv, "octet_session_max_batch: session is NULL");
  CHECK_FAILS(octet_session_max_batch(s, nullptr), inv, "octet_session_max_batch: max_batch is NULL");

  const Bytes px(8 * 8 * 3, 100);
  int8_t q[5];
  float f[5];
  CHECK_FAILS(octet_session_run(nullptr, px.data(), px.size(), 1, q, 5), inv, "octet_session_run: session is NULL");
  CHECK_FAILS(octet_session_run(s, nullptr, px.size(), 1, q, 5), inv, "octet_session_run: pixels is NULL");
  CHECK_FAILS(octet_session_run(s, px.data(), px.size(), 1, nullptr, 5), inv, "octet_session_run: logits is NULL");
  CHECK_FAILS(octet_session_run_float(nullptr, px.data(), px.size(), 1, f, 5), inv,
              "octet_session_run_float: session is NULL");
  CHECK_FAILS(octet_session_run_float(s, nullptr, px.size(), 1, f, 5), inv, "octet_session_run_float: pixels is NULL");
  CHECK_FAILS(octet_session_run_float(s, px.data(), px.size(), 1, nullptr, 5), inv,
              "octet_session_run_float: logits is NULL");

  // After all of that, the handles still work and a success clears the message.
  CHECK_OK(octet_session_run(s, px.data(), px.size(), 1, q, 5));
  CHECK_OK(octet_session_run_float(s, px.data(), px.size(), 1, f, 5));
  CHECK_OK(octet_model_num_classes(h, &i));
  CHECK(i == 5);
  octet_session_free(s);
  octet_model_free(h);
}

TEST_CASE("errors: missing, unreadable and corrupted model files: IO and BAD_MODEL with the reader's message") {
  TempDir dir;
  const std::string missing = (dir.path / "missing.oct").string();
  OctetModel* h = nullptr;
  CHECK_FAILS(octet_model_open_file(missing.c_str(), &h), OCTET_ERROR_IO,
              "octet_model_open_file: " + missing + ": cannot open: No such file or directory");
  CHECK(h == nullptr);
  // A directory opens but cannot be read.
  CHECK_FAILS(octet_model_open_file(dir.path.c_str(), &h), OCTET_ERROR_IO, dir.path.string());

  const Bytes good = tiny_model(6).serialize();
  // One flipped byte in the magic, the header, a table, the data and the CRC:
  // each is a BAD_MODEL whose message is the reader's own (FormatError::what()).
  for (size_t at : {size_t{0}, size_t{9}, size_t{60}, good.size() / 2, good.size() - 20, good.size() - 1}) {
    INFO("byte " << at << " of " << good.size());
    Bytes bad = good;
    bad[at] ^= 0x40;
    std::string reader_says;
    try {
      Model::from_bytes(bad, "corrupt.oct");
    } catch (const FormatError& e) {
      reader_says = e.what();
    }
    REQUIRE(!reader_says.empty());
    REQUIRE(reader_says.rfind("corrupt.oct: ", 0) == 0);
    CHECK_FAILS(octet_model_open_memory(bad.data(), bad.size(), "corrupt.oct", &h), OCTET_ERROR_BAD_MODEL,
                "octet_model_open_memory: " + reader_says);
    CHECK(h == nullptr);
    CHECK(std::string(octet_last_error()) == "octet_model_open_memory: " + reader_says);
    CHECK_FAILS(octet_model_open_memory_nocopy(bad.data(), bad.size(), "corrupt.oct", &h), OCTET_ERROR_BAD_MODEL,
                reader_says);

    const fs::path path = dir.path / "corrupt.oct";
    write_bytes(path, bad);
    CHECK_FAILS(octet_model_open_file(path.c_str(), &h), OCTET_ERROR_BAD_MODEL,
                "octet_model_open_file: " + path.string() + ": ");
    CHECK(h == nullptr);
  }
  // Truncated to nothing, and a text file.
  CHECK_FAILS(octet_model_open_memory(good.data(), 0, "empty.oct", &h), OCTET_ERROR_BAD_MODEL, "empty.oct");
  const std::string text = "not a model";
  CHECK_FAILS(octet_model_open_memory(text.data(), text.size(), nullptr, &h), OCTET_ERROR_BAD_MODEL, "<memory>");

  // ... and the good bytes still open.
  CHECK_OK(octet_model_open_memory(good.data(), good.size(), nullptr, &h));
  REQUIRE(h != nullptr);
  octet_model_free(h);
}

TEST_CASE("errors: counts, input and output sizes; nothing is written on failure") {
  ResNetSpec spec;
  spec.blocks_per_stage = 1;
  spec.width = 4;
  spec.image = 32;
  const Bytes bytes = random_resnet(spec).serialize();
  const auto model = Model::from_bytes(bytes);
  OctetModel* h = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), nullptr, &h));
  OctetSession* s = nullptr;
  CHECK_FAILS(octet_session_create(h, 0, &s), OCTET_ERROR_INVALID_ARGUMENT,
              "octet_session_create: max_batch 0 must be >= 1");
  CHECK_FAILS(octet_session_create(h, -3, &s), OCTET_ERROR_INVALID_ARGUMENT, "max_batch -3 must be >= 1");
  CHECK(s == nullptr);
  CHECK_OK(octet_session_create(h, 2, &s));

  const Bytes px = random_pixels(3 * 3072, 1);  // room for 3 images of 32x32x3
  std::vector<int8_t> q(40, 55);
  std::vector<float> f(40, 5.5f);
  const auto untouched = [&] {
    return std::all_of(q.begin(), q.end(), [](int8_t v) { return v == 55; }) &&
           std::all_of(f.begin(), f.end(), [](float v) { return v == 5.5f; });
  };
  const int size = OCTET_ERROR_SIZE_MISMATCH, inv = OCTET_ERROR_INVALID_ARGUMENT;

  CHECK_FAILS(octet_session_run(s, px.data(), 3071, 1, q.data(), q.size()), size,
              "octet_session_run: input has 3071 bytes, expected 3072 for 1 image of 32x32x3");
  CHECK_FAILS(octet_session_run(s, px.data(), 3073, 1, q.data(), q.size()), size,
              "input has 3073 bytes, expected 3072 for 1 image of 32x32x3");
  CHECK_FAILS(octet_session_run_float(s, px.data(), 3072, 2, f.data(), f.size()), size,
              "octet_session_run_float: input has 3072 bytes, expected 6144 for 2 images of 32x32x3");
  CHECK_FAILS(octet_session_run(s, px.data(), 0, 1, q.data(), q.size()), size, "input has 0 bytes");

  CHECK_FAILS(octet_session_run(s, px.data(), 3 * 3072, 3, q.data(), q.size()), inv,
              "octet_session_run: count 3 is outside [1, 2] (the session's max batch)");
  CHECK_FAILS(octet_session_run_float(s, px.data(), 3 * 3072, 3, f.data(), f.size()), inv,
              "octet_session_run_float: count 3 is outside [1, 2]");
  CHECK_FAILS(octet_session_run(s, px.data(), 0, 0, q.data(), q.size()), inv, "count 0 is outside [1, 2]");
  CHECK_FAILS(octet_session_run(s, px.data(), 3072, -1, q.data(), q.size()), inv, "count -1 is outside [1, 2]");
  CHECK_FAILS(octet_session_run_float(s, px.data(), 3072, 0, f.data(), f.size()), inv, "count 0 is outside [1, 2]");

  CHECK_FAILS(octet_session_run(s, px.data(), 2 * 3072, 2, q.data(), 19), size,
              "octet_session_run: logits buffer has room for 19 bytes, expected at least 20 for 2 images of 10 "
              "classes");
  CHECK_FAILS(octet_session_run(s, px.data(), 3072, 1, q.data(), 0), size,
              "logits buffer has room for 0 bytes, expected at least 10 for 1 image of 10 classes");
  CHECK_FAILS(octet_session_run_float(s, px.data(), 2 * 3072, 2, f.data(), 10), size,
              "octet_session_run_float: logits buffer has room for 10 floats, expected at least 20 for 2 images of 10 "
              "classes");
  CHECK(untouched());

  const char* name = nullptr;
  CHECK_FAILS(octet_model_class_name(h, -1, &name), inv, "octet_model_class_name: index -1 is outside [0, 10)");
  CHECK_FAILS(octet_model_class_name(h, 10, &name), inv, "index 10 is outside [0, 10)");
  CHECK(name == nullptr);  // not written on failure

  // Each failure leaves the session as it was: the next run is right.
  check_run_matches(s, model, 2, 3);
  CHECK_OK(octet_model_class_name(h, 9, &name));
  CHECK(std::string(name) == "class9");
  octet_session_free(s);
  octet_model_free(h);
}

TEST_CASE("errors: float logits of a model that stores no logit scale") {
  ModelBuilder b = bare_model();
  b.mutable_desc().tensors[b.desc().output].scale = 0;  // 0 = unknown, valid in the file
  const Bytes bytes = b.serialize();
  OctetModel* h = nullptr;
  CHECK_OK(octet_model_open_memory(bytes.data(), bytes.size(), "noscale.oct", &h));
  OctetSession* s = nullptr;
  CHECK_OK(octet_session_create(h, 1, &s));
  const uint8_t px[4] = {0, 128, 200, 255};
  float f[2] = {0, 0};
  CHECK_FAILS(octet_session_run_float(s, px, 4, 1, f, 2), OCTET_ERROR_BAD_MODEL,
              "octet_session_run_float: model noscale.oct stores no scale for its logits");
  int8_t q[2] = {0, 0};
  CHECK_OK(octet_session_run(s, px, 4, 1, q, 2));  // the int8 logits are fine
  CHECK(q[0] == 17);                               // as computed by hand in test_executor.cpp
  CHECK(q[1] == 20);
  octet_session_free(s);
  octet_model_free(h);
}

TEST_CASE("the last error is per thread") {
  OctetModel* h = nullptr;
  CHECK_FAILS(octet_model_open_file("/nonexistent/a.oct", &h), OCTET_ERROR_IO, "/nonexistent/a.oct");
  std::string other_thread_saw = "unset", other_thread_failed;
  std::thread([&] {
    other_thread_saw = octet_last_error();
    OctetModel* m = nullptr;
    octet_model_open_file("/nonexistent/b.oct", &m);
    other_thread_failed = octet_last_error();
  }).join();
  CHECK(other_thread_saw.empty());
  CHECK(other_thread_failed.find("/nonexistent/b.oct") != std::string::npos);
  CHECK(contains(octet_last_error(), "/nonexistent/a.oct"));  // this thread's message is its own
}
