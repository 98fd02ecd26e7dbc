/* engine/octet_engine.h: the C API of Octet's integer-only inference engine,
 * a thin and stable layer over the C++ API of engine/engine.h (as TFLite's C
 * API is over its interpreter). Pure C: it compiles as C99 and as C++, and no
 * C++ type or exception crosses it (engine/c_api.cpp catches everything).
 *
 *   OctetModel* model = NULL;
 *   if (octet_model_open_file("resnet20.oct", &model) != OCTET_OK) {
 *     fprintf(stderr, "%s\n", octet_last_error());
 *     return 1;
 *   }
 *   OctetSession* session = NULL;
 *   octet_session_create(model, 100, &session);              // the arena for up to 100 images
 *   octet_session_run(session, pixels, n_bytes, count,      // uint8 NHWC in,
 *                     logits, logits_size);                  // int8 [count, classes] out
 *   octet_session_free(session);
 *   octet_model_free(model);
 *
 * Handles:
 *   OctetModel    a loaded, validated model. Immutable: any number of threads
 *                 may query it and create sessions from it at the same time.
 *   OctetSession  the prepared kernels and the one arena for a maximum batch.
 *                 One thread at a time (one session per thread). A session
 *                 keeps its model alive: the OctetModel handle may be freed
 *                 while sessions made from it still run.
 *
 * Errors: every function that can fail returns an int status, OCTET_OK (0) or
 * one of the negative OctetStatus codes, and leaves a message naming what is
 * wrong in a thread-local buffer, read with octet_last_error(). A call that
 * succeeds clears that message (to ""); the functions that return a string
 * and the free functions neither set nor clear it. On failure a function
 * writes none of its outputs, except that a handle output (*out_model,
 * *out_session) is set to NULL.
 */
#ifndef OCTET_ENGINE_H_
#define OCTET_ENGINE_H_

#include <stddef.h>
#include <stdint.h>

/* Every function is noexcept to a C++ caller: engine/c_api.cpp catches every
 * exception, and should one ever escape, the program terminates at the
 * boundary instead of unwinding through the caller's C frames. */
#ifdef __cplusplus
#define OCTET_NOEXCEPT noexcept
extern "C" {
#else
#define OCTET_NOEXCEPT
#endif

/* ---- version ----------------------------------------------------------------
 * The version of this header; the CMake project version (tests/engine/
 * test_c_api.cpp checks that they agree). octet_engine_version() is the
 * version of the library actually linked, to compare with the header's. */
#define OCTET_ENGINE_VERSION_MAJOR 0
#define OCTET_ENGINE_VERSION_MINOR 1
#define OCTET_ENGINE_VERSION_PATCH 0
#define OCTET_ENGINE_VERSION_STRING "0.1.0"

const char* octet_engine_version(void) OCTET_NOEXCEPT;

/* ---- status codes and the last error ------------------------------------------ */

typedef enum OctetStatus {
  OCTET_OK = 0,
  OCTET_ERROR_INVALID_ARGUMENT = -1, /* a NULL pointer, a count or index out of range */
  OCTET_ERROR_IO = -2,               /* a model file that cannot be opened or read */
  OCTET_ERROR_BAD_MODEL = -3,        /* bytes that are not a valid Octet model (the reader's FormatError) */
  OCTET_ERROR_SIZE_MISMATCH = -4,    /* an input of the wrong size, an output buffer too small */
  OCTET_ERROR_OUT_OF_MEMORY = -5,    /* an allocation failed, or would not fit size_t */
  OCTET_ERROR_INTERNAL = -6          /* anything else: a bug of the engine */
} OctetStatus;

/* "OCTET_OK", "OCTET_ERROR_IO", ...; "unknown status" for any other value. */
const char* octet_status_name(int status) OCTET_NOEXCEPT;

/* The message of the last failed call on this thread, "" if the last call
 * succeeded (or none was made). It starts with the function's name and names
 * the problem, e.g. "octet_session_run: input has 3071 bytes, expected 3072
 * for 1 image of 32x32x3", or the reader's own message naming the file, the
 * record and the field. Valid until the next call of this API on this
 * thread; never NULL; at most 1023 characters (a longer one is cut). */
const char* octet_last_error(void) OCTET_NOEXCEPT;

/* ---- models ---------------------------------------------------------------------- */

typedef struct OctetModel OctetModel;
typedef struct OctetSession OctetSession;

/* The dtypes of the model's input and logits (the values of the file format,
 * docs/format.md): the input is always uint8, the logits always int8. */
typedef enum OctetDType {
  OCTET_DTYPE_INT8 = 1,
  OCTET_DTYPE_UINT8 = 2
} OctetDType;

/* Reads and validates the model file at `path` (every field is checked before
 * it is used; a model that opens runs without overflow). OCTET_ERROR_IO if
 * the file cannot be read, OCTET_ERROR_BAD_MODEL if it is not a valid model. */
int octet_model_open_file(const char* path, OctetModel** out_model) OCTET_NOEXCEPT;

/* The same from `size` bytes in memory. `name` starts the error messages and
 * is the model's name when its metadata has none; NULL means "<memory>".
 *
 * Both variants validate the bytes and decode them ONCE into the model's own
 * storage: each layer's weights are unpacked from their 2..8-bit storage and
 * packed for the CPU's best instruction set (the one every session of the
 * model runs on), and the unpacked copy is dropped as soon as its layer is
 * packed, so the model holds its weights once. The C++ engine
 * (engine::Model::from_bytes) never keeps a pointer to the bytes it was
 * given, nor a copy of them. So today:
 *   octet_model_open_memory         the bytes may be freed as soon as the call returns.
 *   octet_model_open_memory_nocopy  makes no copy of the raw bytes either (it
 *                                   is the same decode), but its contract is
 *                                   the zero-copy one: the caller keeps the
 *                                   bytes alive and unchanged until
 *                                   octet_model_free. This version of the
 *                                   engine does not rely on it; a later one
 *                                   may (e.g. 8-bit weights used in place),
 *                                   without changing this API.
 * Neither ever holds a second copy of the whole file (octet_model_open_file
 * holds one while it decodes, then frees it). */
int octet_model_open_memory(const void* data, size_t size, const char* name,
                            OctetModel** out_model) OCTET_NOEXCEPT;
int octet_model_open_memory_nocopy(const void* data, size_t size, const char* name,
                                   OctetModel** out_model) OCTET_NOEXCEPT;

/* Frees the handle; NULL is allowed. Sessions made from it stay valid. */
void octet_model_free(OctetModel* model) OCTET_NOEXCEPT;

/* The input image: height, width, channels (NHWC, uint8), and its byte size. */
int octet_model_input_shape(const OctetModel* model, int* height, int* width, int* channels) OCTET_NOEXCEPT;
int octet_model_input_bytes(const OctetModel* model, size_t* bytes_per_image) OCTET_NOEXCEPT;
/* real = scale * (pixel - zero_point); dtype is OCTET_DTYPE_UINT8. The scale
 * is informative: the engine itself never uses one (0 means unknown). */
int octet_model_input_quant(const OctetModel* model, double* scale, int32_t* zero_point,
                            OctetDType* dtype) OCTET_NOEXCEPT;

int octet_model_num_classes(const OctetModel* model, int* num_classes) OCTET_NOEXCEPT;
/* The logits: real = scale * (q - zero_point); dtype is OCTET_DTYPE_INT8. */
int octet_model_output_quant(const OctetModel* model, double* scale, int32_t* zero_point,
                             OctetDType* dtype) OCTET_NOEXCEPT;

/* The name of class `index` (0 <= index < num_classes, else
 * OCTET_ERROR_INVALID_ARGUMENT), or NULL (with OCTET_OK) if the model stores
 * no class names. The string lives as long as the model handle. */
int octet_model_class_name(const OctetModel* model, int index, const char** name) OCTET_NOEXCEPT;
/* The model_name of the metadata, else the path or the name it was opened
 * with. Lives as long as the model handle. */
int octet_model_name(const OctetModel* model, const char** name) OCTET_NOEXCEPT;

/* ---- sessions ---------------------------------------------------------------------- */

/* Prepares every kernel for batches of up to max_batch images (>= 1) and
 * allocates the session's one arena; runs allocate nothing after this.
 * OCTET_ERROR_OUT_OF_MEMORY if the arena does not fit. */
int octet_session_create(const OctetModel* model, int max_batch, OctetSession** out_session) OCTET_NOEXCEPT;
/* Frees the session; NULL is allowed. */
void octet_session_free(OctetSession* session) OCTET_NOEXCEPT;
int octet_session_max_batch(const OctetSession* session, int* max_batch) OCTET_NOEXCEPT;

/* Runs `count` images (1 <= count <= max_batch): `pixels` holds them as uint8
 * NHWC, and `pixels_size` must be exactly count * H * W * C bytes. Writes the
 * int8 logits [count, num_classes] to `logits`, of `logits_size` bytes (at
 * least count * num_classes). The results are bit exact: the same on every
 * CPU, instruction set and thread count. */
int octet_session_run(OctetSession* session, const uint8_t* pixels, size_t pixels_size, int count,
                      int8_t* logits, size_t logits_size) OCTET_NOEXCEPT;
/* The same, writing the real logits scale * (q - zero_point) (computed in
 * double, stored as float) to `logits`, of room for `logits_count` floats (at
 * least count * num_classes). OCTET_ERROR_BAD_MODEL if the model stores no
 * scale for its logits (scale 0): use octet_session_run then. */
int octet_session_run_float(OctetSession* session, const uint8_t* pixels, size_t pixels_size, int count,
                            float* logits, size_t logits_count) OCTET_NOEXCEPT;

/* ---- the engine ---------------------------------------------------------------------- */

/* The number of threads of the engine, for the whole process (every session).
 * <= 0: all cores. Call it before running, not while a session runs. */
int octet_set_num_threads(int threads) OCTET_NOEXCEPT;
int octet_get_num_threads(int* threads) OCTET_NOEXCEPT;

/* The instruction set the kernels of new sessions use, chosen once at run
 * time ("reference", "avx2", "avx512_vnni", "amx", "neon", "neon_dot"; the
 * environment variable OCTET_ISA may pick a lower one). */
const char* octet_isa_name(void) OCTET_NOEXCEPT;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* OCTET_ENGINE_H_ */
