// engine/c_api.cpp: the C API of engine/octet_engine.h over the C++ API of
// engine/engine.h. Every entry point checks its arguments itself (so each
// error names the argument and the numbers), runs the C++ call inside
// guarded(), which turns every exception into a status and a message, and
// clears the thread-local message when it succeeds.
//
// The message buffer is a fixed thread-local char array written with
// snprintf: reporting an error allocates nothing, so it works when the error
// is std::bad_alloc, and the run path (checks, Session::run, the copy out)
// allocates nothing on success or failure.
#include "engine/octet_engine.h"

#include <array>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/format.h"
#include "engine/kernels.h"

using octet::engine::DType;
using octet::engine::FormatErrc;
using octet::engine::FormatError;
using octet::engine::Model;
using octet::engine::ModelOptions;
using octet::engine::Session;

// The handles. The model's strings live here so that the const char* the API
// hands out stay valid as long as the handle.
struct OctetModel {
  std::shared_ptr<const Model> model;
  std::string name;
  std::vector<std::string> class_names;  // empty if the file has none
};

struct OctetSession {
  OctetSession(std::shared_ptr<const Model> m, int max_batch) : session(std::move(m), max_batch) {}
  Session session;  // holds the model: it outlives the OctetModel handle if need be
  std::string model_name;  // for messages
  bool has_scale = false;  // the logits have a real value (octet_session_run_float)
  std::array<float, 256> real{};  // the float logit of every int8 code, [q + 128]
};

namespace {

constexpr size_t kErrorBytes = 1024;  // longer messages are truncated
thread_local char t_error[kErrorBytes];

void clear_error() noexcept { t_error[0] = '\0'; }

// Writes "fn: <message>" as this thread's last error and returns `status`.
__attribute__((format(printf, 3, 4))) int fail(int status, const char* fn, const char* fmt, ...) noexcept {
  const int n = std::snprintf(t_error, kErrorBytes, "%s: ", fn);
  if (n >= 0 && static_cast<size_t>(n) < kErrorBytes) {
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(t_error + n, kErrorBytes - static_cast<size_t>(n), fmt, args);
    va_end(args);
  }
  return status;
}

int null_arg(const char* fn, const char* arg) noexcept {
  return fail(OCTET_ERROR_INVALID_ARGUMENT, fn, "%s is NULL", arg);
}

// Runs `body` (which returns a status, having called fail() for any error it
// finds itself) with no exception escaping: the reader's FormatError becomes
// IO or BAD_MODEL with the reader's message (it names the file, the record
// and the field), allocation failures OUT_OF_MEMORY, anything else INTERNAL.
template <class Body>
int guarded(const char* fn, Body&& body) noexcept {
  try {
    const int status = body();
    if (status == OCTET_OK) clear_error();
    return status;
  } catch (const FormatError& e) {
    return fail(e.code() == FormatErrc::io ? OCTET_ERROR_IO : OCTET_ERROR_BAD_MODEL, fn, "%s", e.what());
  } catch (const std::bad_alloc&) {
    return fail(OCTET_ERROR_OUT_OF_MEMORY, fn, "out of memory");
  } catch (const std::length_error& e) {  // a container asked for more than it can hold
    return fail(OCTET_ERROR_OUT_OF_MEMORY, fn, "out of memory (%s)", e.what());
  } catch (const std::exception& e) {
    return fail(OCTET_ERROR_INTERNAL, fn, "internal error: %s", e.what());
  } catch (...) {
    return fail(OCTET_ERROR_INTERNAL, fn, "internal error: an unknown exception");
  }
}

int wrap_model(std::shared_ptr<const Model> model, OctetModel** out_model) {
  auto handle = std::make_unique<OctetModel>();
  handle->name = model->name();
  handle->class_names = model->class_names();
  handle->model = std::move(model);
  *out_model = handle.release();
  return OCTET_OK;
}

// The C API only runs models: each holds its weights once, packed for the
// CPU's best instruction set (the one its sessions use).
ModelOptions inference_only() {
  ModelOptions o;
  o.inference_only = true;
  return o;
}

int open_memory(const char* fn, const void* data, size_t size, const char* name, OctetModel** out_model) noexcept {
  if (out_model) *out_model = nullptr;
  return guarded(fn, [&]() -> int {
    if (!out_model) return null_arg(fn, "out_model");
    if (!data) return null_arg(fn, "data");
    // Model::from_bytes decodes into the model's own storage and keeps no
    // pointer to `data` (engine/octet_engine.h: why there are two variants).
    const std::span<const uint8_t> bytes(static_cast<const uint8_t*>(data), size);
    return wrap_model(Model::from_bytes(bytes, name ? name : "<memory>", inference_only()), out_model);
  });
}

const octet::engine::TensorDesc& input_tensor(const Model& m) { return m.desc().tensors[m.desc().input]; }
const octet::engine::TensorDesc& output_tensor(const Model& m) { return m.desc().tensors[m.desc().output]; }

OctetDType dtype_of(DType t) { return t == DType::uint8 ? OCTET_DTYPE_UINT8 : OCTET_DTYPE_INT8; }

// The checks shared by both runs (out_len counts `out_unit`s).
int check_run(const char* fn, OctetSession* session, const uint8_t* pixels, size_t pixels_size, int count,
              const void* out, size_t out_len, const char* out_unit) {
  if (!session) return null_arg(fn, "session");
  if (!pixels) return null_arg(fn, "pixels");
  if (!out) return null_arg(fn, "logits");
  Session& s = session->session;
  const Model& m = s.model();
  if (count < 1 || count > s.max_batch())
    return fail(OCTET_ERROR_INVALID_ARGUMENT, fn, "count %d is outside [1, %d] (the session's max batch)", count,
                s.max_batch());
  // count <= max_batch, and the session's arena already holds max_batch
  // images' worth of the input op's output (as many elements as the pixels)
  // and of the logits, so neither product overflows.
  const size_t images = static_cast<size_t>(count);
  const size_t want_in = images * m.input_bytes();
  const char* plural = count == 1 ? "" : "s";
  if (pixels_size != want_in)
    return fail(OCTET_ERROR_SIZE_MISMATCH, fn, "input has %zu bytes, expected %zu for %d image%s of %dx%dx%d",
                pixels_size, want_in, count, plural, m.input_h(), m.input_w(), m.input_c());
  const size_t want_out = images * static_cast<size_t>(m.num_classes());
  if (out_len < want_out)
    return fail(OCTET_ERROR_SIZE_MISMATCH, fn,
                "logits buffer has room for %zu %s, expected at least %zu for %d image%s of %d classes", out_len,
                out_unit, want_out, count, plural, m.num_classes());
  return OCTET_OK;
}

}  // namespace

extern "C" {

// ---- version, status, last error -------------------------------------------------

const char* octet_engine_version(void) noexcept { return OCTET_ENGINE_VERSION_STRING; }

const char* octet_status_name(int status) noexcept {
  switch (status) {
    case OCTET_OK: return "OCTET_OK";
    case OCTET_ERROR_INVALID_ARGUMENT: return "OCTET_ERROR_INVALID_ARGUMENT";
    case OCTET_ERROR_IO: return "OCTET_ERROR_IO";
    case OCTET_ERROR_BAD_MODEL: return "OCTET_ERROR_BAD_MODEL";
    case OCTET_ERROR_SIZE_MISMATCH: return "OCTET_ERROR_SIZE_MISMATCH";
    case OCTET_ERROR_OUT_OF_MEMORY: return "OCTET_ERROR_OUT_OF_MEMORY";
    case OCTET_ERROR_INTERNAL: return "OCTET_ERROR_INTERNAL";
  }
  return "unknown status";
}

const char* octet_last_error(void) noexcept { return t_error; }

// ---- models -------------------------------------------------------------------------

int octet_model_open_file(const char* path, OctetModel** out_model) noexcept {
  static constexpr const char* fn = "octet_model_open_file";
  if (out_model) *out_model = nullptr;
  return guarded(fn, [&]() -> int {
    if (!out_model) return null_arg(fn, "out_model");
    if (!path) return null_arg(fn, "path");
    return wrap_model(Model::load(path, inference_only()), out_model);
  });
}

int octet_model_open_memory(const void* data, size_t size, const char* name, OctetModel** out_model) noexcept {
  return open_memory("octet_model_open_memory", data, size, name, out_model);
}

int octet_model_open_memory_nocopy(const void* data, size_t size, const char* name, OctetModel** out_model) noexcept {
  return open_memory("octet_model_open_memory_nocopy", data, size, name, out_model);
}

void octet_model_free(OctetModel* model) noexcept { delete model; }

int octet_model_input_shape(const OctetModel* model, int* height, int* width, int* channels) noexcept {
  static constexpr const char* fn = "octet_model_input_shape";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!height) return null_arg(fn, "height");
    if (!width) return null_arg(fn, "width");
    if (!channels) return null_arg(fn, "channels");
    *height = model->model->input_h();
    *width = model->model->input_w();
    *channels = model->model->input_c();
    return OCTET_OK;
  });
}

int octet_model_input_bytes(const OctetModel* model, size_t* bytes_per_image) noexcept {
  static constexpr const char* fn = "octet_model_input_bytes";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!bytes_per_image) return null_arg(fn, "bytes_per_image");
    *bytes_per_image = model->model->input_bytes();
    return OCTET_OK;
  });
}

int octet_model_input_quant(const OctetModel* model, double* scale, int32_t* zero_point, OctetDType* dtype) noexcept {
  static constexpr const char* fn = "octet_model_input_quant";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!scale) return null_arg(fn, "scale");
    if (!zero_point) return null_arg(fn, "zero_point");
    if (!dtype) return null_arg(fn, "dtype");
    const auto& t = input_tensor(*model->model);
    *scale = t.scale;
    *zero_point = t.zero_point;  // the file's, in uint8's own range (not the engine's int8 carry)
    *dtype = dtype_of(t.dtype);
    return OCTET_OK;
  });
}

int octet_model_num_classes(const OctetModel* model, int* num_classes) noexcept {
  static constexpr const char* fn = "octet_model_num_classes";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!num_classes) return null_arg(fn, "num_classes");
    *num_classes = model->model->num_classes();
    return OCTET_OK;
  });
}

int octet_model_output_quant(const OctetModel* model, double* scale, int32_t* zero_point, OctetDType* dtype) noexcept {
  static constexpr const char* fn = "octet_model_output_quant";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!scale) return null_arg(fn, "scale");
    if (!zero_point) return null_arg(fn, "zero_point");
    if (!dtype) return null_arg(fn, "dtype");
    const auto& t = output_tensor(*model->model);
    *scale = t.scale;
    *zero_point = t.zero_point;
    *dtype = dtype_of(t.dtype);
    return OCTET_OK;
  });
}

int octet_model_class_name(const OctetModel* model, int index, const char** name) noexcept {
  static constexpr const char* fn = "octet_model_class_name";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!name) return null_arg(fn, "name");
    const int classes = model->model->num_classes();
    if (index < 0 || index >= classes)
      return fail(OCTET_ERROR_INVALID_ARGUMENT, fn, "index %d is outside [0, %d) (the model's classes)", index,
                  classes);
    // The reader checks that a class_names entry has one name per class.
    const auto i = static_cast<size_t>(index);
    *name = i < model->class_names.size() ? model->class_names[i].c_str() : nullptr;
    return OCTET_OK;
  });
}

int octet_model_name(const OctetModel* model, const char** name) noexcept {
  static constexpr const char* fn = "octet_model_name";
  return guarded(fn, [&]() -> int {
    if (!model) return null_arg(fn, "model");
    if (!name) return null_arg(fn, "name");
    *name = model->name.c_str();
    return OCTET_OK;
  });
}

// ---- sessions -------------------------------------------------------------------------

int octet_session_create(const OctetModel* model, int max_batch, OctetSession** out_session) noexcept {
  static constexpr const char* fn = "octet_session_create";
  if (out_session) *out_session = nullptr;
  return guarded(fn, [&]() -> int {
    if (!out_session) return null_arg(fn, "out_session");
    if (!model) return null_arg(fn, "model");
    if (max_batch < 1) return fail(OCTET_ERROR_INVALID_ARGUMENT, fn, "max_batch %d must be >= 1", max_batch);
    std::unique_ptr<OctetSession> s;
    try {
      s = std::make_unique<OctetSession>(model->model, max_batch);
    } catch (const std::invalid_argument& e) {
      // With the model and max_batch checked above, the one invalid_argument
      // left is an arena whose size does not fit size_t.
      return fail(OCTET_ERROR_OUT_OF_MEMORY, fn, "max_batch %d: %s", max_batch, e.what());
    }
    const Model& m = *model->model;
    s->model_name = m.name();
    s->has_scale = output_tensor(m).scale > 0;
    for (int q = -128; q <= 127; ++q)
      s->real[static_cast<size_t>(q + 128)] = static_cast<float>(m.logit_real(static_cast<int8_t>(q)));
    *out_session = s.release();
    return OCTET_OK;
  });
}

void octet_session_free(OctetSession* session) noexcept { delete session; }

int octet_session_max_batch(const OctetSession* session, int* max_batch) noexcept {
  static constexpr const char* fn = "octet_session_max_batch";
  return guarded(fn, [&]() -> int {
    if (!session) return null_arg(fn, "session");
    if (!max_batch) return null_arg(fn, "max_batch");
    *max_batch = session->session.max_batch();
    return OCTET_OK;
  });
}

int octet_session_run(OctetSession* session, const uint8_t* pixels, size_t pixels_size, int count, int8_t* logits,
                      size_t logits_size) noexcept {
  static constexpr const char* fn = "octet_session_run";
  return guarded(fn, [&]() -> int {
    const int status = check_run(fn, session, pixels, pixels_size, count, logits, logits_size, "bytes");
    if (status != OCTET_OK) return status;
    const std::span<const int8_t> q = session->session.run(pixels, count);
    std::memcpy(logits, q.data(), q.size());
    return OCTET_OK;
  });
}

int octet_session_run_float(OctetSession* session, const uint8_t* pixels, size_t pixels_size, int count,
                            float* logits, size_t logits_count) noexcept {
  static constexpr const char* fn = "octet_session_run_float";
  return guarded(fn, [&]() -> int {
    const int status = check_run(fn, session, pixels, pixels_size, count, logits, logits_count, "floats");
    if (status != OCTET_OK) return status;
    if (!session->has_scale)
      return fail(OCTET_ERROR_BAD_MODEL, fn,
                  "model %s stores no scale for its logits (0 = unknown): use octet_session_run",
                  session->model_name.c_str());
    const std::span<const int8_t> q = session->session.run(pixels, count);
    for (size_t i = 0; i < q.size(); ++i) logits[i] = session->real[static_cast<size_t>(q[i] + 128)];
    return OCTET_OK;
  });
}

// ---- the engine ---------------------------------------------------------------------------

int octet_set_num_threads(int threads) noexcept {
  return guarded("octet_set_num_threads", [&]() -> int {
    octet::engine::set_num_threads(threads);
    return OCTET_OK;
  });
}

int octet_get_num_threads(int* threads) noexcept {
  static constexpr const char* fn = "octet_get_num_threads";
  return guarded(fn, [&]() -> int {
    if (!threads) return null_arg(fn, "threads");
    *threads = octet::engine::num_threads();
    return OCTET_OK;
  });
}

const char* octet_isa_name(void) noexcept { return octet::engine::isa_name(octet::engine::best_isa()); }

}  // extern "C"
