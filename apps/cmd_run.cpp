// apps/cmd_run.cpp: `octet run MODEL IMAGE...`: classifies image files with
// the integer engine and prints the top-5 classes of each. The model takes
// images of the shape it was trained on (its input tensor, H x W x C): an
// image of another size is resized only with --resize, and refused otherwise,
// naming both sizes, so no model silently sees another shape than it learned.
// A color image for a gray model (or the reverse) is converted, and the
// output says so (stb_image's luma, or gray replicated into R, G and B).
#include <stb/stb_image.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "apps/args.h"
#include "apps/commands.h"
#include "core/dataset.h"
#include "core/image.h"
#include "engine/engine.h"

namespace octet::app {

namespace {
const char* kUsage = R"(usage: octet run MODEL IMAGE... [--top K] [--resize] [--threads N]

Runs JPEG/PNG/BMP images through an Octet model file in the integer engine
and prints, per image, the top K classes (default 5) with their int8 logit,
its real value (scale * (q - zero_point)) and the softmax of the real logits.
Images must have the size of the model's input (the size it was trained on);
one of another size is an error, unless --resize. A color image for a gray
model is turned to gray (and a gray one for a color model to RGB); the
output says so.

  --resize    resize images of another size to the model's (area filter)
)";
}  // namespace

int cmd_run(int argc, char** argv) {
  Args a(argc, argv, "octet run", kUsage);
  if (a.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const int top = a.get_int("--top", 5);
  const bool allow_resize = a.flag("--resize");
  const int threads = a.get_int("--threads", 0);
  a.finish();
  const std::string path = a.positional_at(0, "the model file (MODEL)");
  if (a.positional().size() < 2) throw UsageError("octet run: give at least one IMAGE after the MODEL");
  if (top < 1) throw UsageError("octet run: --top must be >= 1");
  engine::set_num_threads(threads);

  const auto model = engine::Model::load(path);
  engine::Session session(model, 1);
  const std::vector<std::string> names = model->class_names();
  const int W = model->input_w(), H = model->input_h(), C = model->input_c();
  if (C != 3 && C != 1) throw std::runtime_error(path + ": the model takes " + std::to_string(C) + " channels; images have 1 or 3");
  const ImageShape takes{C, H, W};
  std::printf("model %s (%s): input %s, %d classes\n", path.c_str(), model->name().c_str(), takes.str().c_str(),
              model->num_classes());
  int failures = 0;
  for (size_t i = 1; i < a.positional().size(); ++i) {
    const std::string& file = a.positional()[i];
    Image img;
    int file_channels = 0;  // what the file holds: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
    try {
      const std::vector<uint8_t> bytes = read_file_bytes(file);
      int w = 0, h = 0;
      if (bytes.size() <= static_cast<size_t>(std::numeric_limits<int>::max()) &&
          !stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h, &file_channels))
        file_channels = 0;
      img = decode_image(bytes, file, C);
    } catch (const std::exception& e) {
      std::printf("\n%s: error: %s\n", file.c_str(), e.what());
      ++failures;
      continue;
    }
    const int w0 = img.width, h0 = img.height;
    if ((w0 != W || h0 != H) && !allow_resize) {
      std::printf("\n%s: error: the image is %dx%d, the model takes %s images (what it was trained on); "
                  "give --resize to resize it\n",
                  file.c_str(), w0, h0, takes.str().c_str());
      ++failures;
      continue;
    }
    bool resized = false;
    const Image in = resize_to(img, W, H, resized);
    std::printf("\n%s: %dx%d", file.c_str(), w0, h0);
    if (resized) std::printf(" (resized to %dx%d: the model takes %dx%d images)", W, H, W, H);
    const bool file_gray = file_channels == 1 || file_channels == 2;
    if (file_channels > 0 && file_gray && C != 1) std::printf(" (gray, replicated to RGB: the model takes %d channels)", C);
    if (file_channels > 0 && !file_gray && C == 1) std::printf(" (color, turned to gray: the model takes 1 channel)");
    std::printf("\n");
    const std::span<const int8_t> logits = session.run(in.pixels.data(), 1);
    // Softmax of the real logits, for display only (the engine itself stops at int8).
    std::vector<double> real(logits.size());
    for (size_t c = 0; c < logits.size(); ++c) real[c] = model->logit_real(logits[c]);
    const double mx = *std::max_element(real.begin(), real.end());
    double z = 0;
    for (double r : real) z += std::exp(r - mx);
    for (const engine::Scored& s : engine::top_k(logits, top)) {
      const std::string name = s.index < static_cast<int>(names.size()) ? names[static_cast<size_t>(s.index)]
                                                                          : "class " + std::to_string(s.index);
      std::printf("  %-14s logit %4d (%8.4f)  p %.4f\n", name.c_str(), s.value, real[static_cast<size_t>(s.index)],
                  std::exp(real[static_cast<size_t>(s.index)] - mx) / z);
    }
  }
  return failures ? 1 : 0;
}

}  // namespace octet::app
