/* The C API from C: engine/octet_engine.h compiles as C99 (this file is
 * built as C, tests/engine/CMakeLists.txt) and links against the C++ engine.
 * It checks the version, the status names and the error paths a C caller
 * meets first (a missing file, bytes that are not a model, NULL arguments):
 * each returns its status and leaves a message. The full API is checked
 * against the C++ one in test_c_api.cpp. Exit code 0 if all pass, 1 if not. */
#include <stdio.h>
#include <string.h>

#include "engine/octet_engine.h"

static int failures = 0;

#define EXPECT(cond)                                                 \
  do {                                                               \
    if (!(cond)) {                                                   \
      fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                    \
    }                                                                \
  } while (0)

static int message_has(const char* part) { return strstr(octet_last_error(), part) != NULL; }

int main(void) {
  OctetModel* model = NULL;
  OctetSession* session = NULL;
  const unsigned char not_a_model[16] = {'n', 'o', 't', ' ', 'a', ' ', 'm', 'o', 'd', 'e', 'l'};
  int classes = -1;

  EXPECT(strcmp(octet_engine_version(), OCTET_ENGINE_VERSION_STRING) == 0);
  EXPECT(OCTET_ENGINE_VERSION_MAJOR == 0 && OCTET_ENGINE_VERSION_MINOR == 1 && OCTET_ENGINE_VERSION_PATCH == 0);
  EXPECT(strcmp(octet_status_name(OCTET_ERROR_IO), "OCTET_ERROR_IO") == 0);
  EXPECT(strcmp(octet_last_error(), "") == 0);
  EXPECT(strlen(octet_isa_name()) > 0);

  EXPECT(octet_model_open_file("/nonexistent/octet_c_test.oct", &model) == OCTET_ERROR_IO);
  EXPECT(model == NULL);
  EXPECT(message_has("octet_model_open_file: /nonexistent/octet_c_test.oct: cannot open"));

  EXPECT(octet_model_open_memory(not_a_model, sizeof not_a_model, "junk.oct", &model) == OCTET_ERROR_BAD_MODEL);
  EXPECT(model == NULL);
  EXPECT(message_has("octet_model_open_memory: junk.oct"));

  EXPECT(octet_model_open_file(NULL, &model) == OCTET_ERROR_INVALID_ARGUMENT);
  EXPECT(message_has("path is NULL"));
  EXPECT(octet_model_num_classes(NULL, &classes) == OCTET_ERROR_INVALID_ARGUMENT);
  EXPECT(classes == -1);
  EXPECT(octet_session_create(NULL, 1, &session) == OCTET_ERROR_INVALID_ARGUMENT);
  EXPECT(session == NULL);
  EXPECT(octet_session_run(NULL, NULL, 0, 1, NULL, 0) == OCTET_ERROR_INVALID_ARGUMENT);
  EXPECT(message_has("octet_session_run: session is NULL"));

  /* A call that succeeds clears the message. */
  EXPECT(octet_set_num_threads(1) == OCTET_OK);
  EXPECT(strcmp(octet_last_error(), "") == 0);
  octet_model_free(NULL);
  octet_session_free(NULL);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("C API from C: all checks passed (engine %s, %s kernels)\n", octet_engine_version(), octet_isa_name());
  return 0;
}
