/* examples/classify/classify.c: classifies one image with an INSTALLED Octet
 * engine, through its C API (engine/octet_engine.h). A program of its own,
 * built against the install, not against this repository's build (README.md
 * here: CMake's find_package, or pkg-config).
 *
 *   classify MODEL.oct IMAGE [THREADS]
 *
 * IMAGE is anything stb_image reads (PNG, JPEG, BMP, ...), converted to the
 * model's number of channels. Its width and height must be the model's input
 * size: the model was trained at that size, and an image is never resized
 * here (another size is an error naming both). Prints the five best classes,
 * best first (equal logits: the lower class first, as the engine's top_k):
 * index, name, real logit and its int8 code. The engine is bit exact, so this
 * output is the same on every CPU; the instruction set it ran on goes to
 * stderr. THREADS: the engine's thread count (default: every core; one image
 * of a small network is often as fast on one, and a thread pool costs memory).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/octet_engine.h"

/* stb_image's implementation is compiled into this program: the header is
 * all it needs (Debian's libstb-dev; a cross sysroot rarely has libstb). Only
 * the 8-bit decoders: no float (HDR) images. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#define TOP 5

int main(int argc, char** argv) {
  OctetModel* model = NULL;
  OctetSession* session = NULL;
  unsigned char* pixels = NULL;
  int8_t* logits = NULL;
  const char* model_name = NULL;
  int h = 0, w = 0, c = 0, classes = 0, image_w = 0, image_h = 0, image_c = 0;
  double scale = 0;
  int32_t zero_point = 0;
  OctetDType dtype;
  int best[TOP], n_best = 0, i, ret = 1;

  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: classify MODEL.oct IMAGE [THREADS]\n");
    return 2;
  }
  if (argc == 4) {
    char* end = NULL;
    const long threads = strtol(argv[3], &end, 10);
    if (*argv[3] == '\0' || *end != '\0' || threads < 1 || threads > 1024 ||
        octet_set_num_threads((int)threads) != OCTET_OK) {
      fprintf(stderr, "classify: THREADS must be a whole number in [1, 1024], not '%s'\n", argv[3]);
      return 2;
    }
  }
  /* Every call of the API returns a status; the message is octet_last_error(). */
  if (octet_model_open_file(argv[1], &model) != OCTET_OK ||
      octet_model_input_shape(model, &h, &w, &c) != OCTET_OK ||
      octet_model_num_classes(model, &classes) != OCTET_OK ||
      octet_model_output_quant(model, &scale, &zero_point, &dtype) != OCTET_OK ||
      octet_model_name(model, &model_name) != OCTET_OK) {
    fprintf(stderr, "classify: %s\n", octet_last_error());
    goto done;
  }
  if (c < 1 || c > 4) {  /* what stb_image can convert to */
    fprintf(stderr, "classify: %s takes %d channels; stb_image gives 1 to 4\n", argv[1], c);
    goto done;
  }
  pixels = stbi_load(argv[2], &image_w, &image_h, &image_c, c);  /* uint8 HWC, c channels */
  if (!pixels) {
    fprintf(stderr, "classify: %s: %s\n", argv[2], stbi_failure_reason());
    goto done;
  }
  if (image_w != w || image_h != h) {
    fprintf(stderr, "classify: %s is %dx%d, %s takes %dx%d images (resize it first: the model was trained at that size)\n",
            argv[2], image_w, image_h, argv[1], w, h);
    goto done;
  }
  logits = malloc((size_t)classes);
  if (!logits) {
    fprintf(stderr, "classify: out of memory\n");
    goto done;
  }
  if (octet_session_create(model, 1, &session) != OCTET_OK ||
      octet_session_run(session, pixels, (size_t)w * h * c, 1, logits, (size_t)classes) != OCTET_OK) {
    fprintf(stderr, "classify: %s\n", octet_last_error());
    goto done;
  }
  fprintf(stderr, "classify: engine %s, isa %s\n", octet_engine_version(), octet_isa_name());

  /* The TOP largest logits, by insertion: a later class moves past an
   * earlier one only when strictly larger, so equals keep the lower index first. */
  for (i = 0; i < classes; ++i) {
    int j = n_best < TOP ? n_best++ : TOP;
    for (; j > 0 && logits[best[j - 1]] < logits[i]; --j)
      if (j < TOP) best[j] = best[j - 1];
    if (j < TOP) best[j] = i;
  }
  printf("%s, %dx%dx%d: %s\n", model_name, w, h, c, argv[2]);
  for (i = 0; i < n_best; ++i) {
    const char* name = NULL;
    const int q = logits[best[i]];
    if (octet_model_class_name(model, best[i], &name) != OCTET_OK || !name) name = "-";
    /* real = scale * (q - zero_point); a model without a logit scale has the codes only. */
    if (scale > 0)
      printf("%d. class %3d  %-16s %9.3f  (int8 %4d)\n", i + 1, best[i], name, scale * (q - zero_point), q);
    else
      printf("%d. class %3d  %-16s int8 %4d\n", i + 1, best[i], name, q);
  }
  ret = 0;

done:
  free(logits);
  stbi_image_free(pixels);
  octet_session_free(session);
  octet_model_free(model);
  return ret;
}
