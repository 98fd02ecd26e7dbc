// apps/model_io.cpp: see model_io.h.
#include "apps/model_io.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "core/checkpoint.h"
#include "nn/trainer.h"

namespace octet::app {

bool is_model_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open '" + path + "'");
  char magic[8] = {};
  f.read(magic, sizeof magic);
  return f.gcount() == 8 && std::memcmp(magic, "OCTET\0\r\n", 8) == 0;
}

PtqFlags PtqFlags::read(Args& a, const std::string& data_fallback) {
  PtqFlags p;
  p.data = a.get("--calib-data", data_fallback);
  p.observer = a.get("--observer", p.observer);
  p.images = a.get_int("--calib-images", p.images);
  p.weight_bits = a.get_int("--weight-bits", p.weight_bits);
  p.act_bits = a.get_int("--act-bits", p.act_bits);
  p.config_file = a.get("--qat-config", "");
  if (p.images < 1) throw UsageError("--calib-images must be >= 1");
  return p;
}

const char* PtqFlags::usage() {
  return R"(PTQ of a float checkpoint (calibration on its train split):
  --calib-data PATH     calibration data set (default: --data)
  --observer KIND       minmax|ema|percentile|meanstd|entropy|mse (default minmax)
  --calib-images N      calibration images (default 1000)
  --weight-bits B  --act-bits B   (default 8 and 8)
  --qat-config FILE     any QatConfig "key = value" lines (applied first)
)";
}

quant::LoadedModel load_checkpoint_model(const std::string& path, bool need_quantized, const PtqFlags& ptq) {
  quant::LoadedModel m = quant::load_model(path);
  if (m.qat) {
    std::printf("checkpoint %s: %s, quantization-aware (%s, %d-bit weights, %d-bit activations)\n", path.c_str(),
                m.model->config().name.c_str(), std::string(quant::quant_op_name(m.qat->op)).c_str(),
                m.qat->weight_bits, m.qat->act_bits);
    return m;
  }
  if (!need_quantized) {
    std::printf("checkpoint %s: %s, float\n", path.c_str(), m.model->config().name.c_str());
    return m;
  }
  quant::QatConfig cfg = ptq.config_file.empty() ? quant::QatConfig{} : quant::QatConfig::from_file(ptq.config_file);
  cfg.weight_bits = ptq.weight_bits;
  cfg.act_bits = ptq.act_bits;
  cfg.act_observer.kind = ptq.observer;
  cfg.validate();
  const Dataset train = load_dataset(resolve_data_path(ptq.data), Split::train, data_options(m, path));
  std::printf("checkpoint %s: %s, float -> PTQ calibration: observer %s, %d train images from %s\n", path.c_str(),
              m.model->config().name.c_str(), ptq.observer.c_str(), ptq.images, train.source.c_str());
  std::fflush(stdout);
  quant::calibrate(*m.model, cfg, train, m.preprocess, ptq.images);
  m.qat = cfg;
  return m;
}

LoadOptions data_options(const ImageShape& shape, const std::string& who) {
  LoadOptions o;
  o.channels = shape.channels;
  o.height = shape.height;
  o.width = shape.width;
  o.wanted_by = who;
  return o;
}

LoadOptions data_options(const quant::LoadedModel& m, const std::string& path) {
  if (m.input_recorded) return data_options(m.input, "the input of " + path);
  LoadOptions o;  // before the input.* metadata every model took 3 channels, of any size in float
  o.channels = 3;
  o.wanted_by = "the input of " + path;
  return o;
}

std::vector<uint8_t> images_nhwc(const Dataset& ds, int64_t first, int64_t n) {
  const int C = ds.channels, H = ds.height, W = ds.width;
  std::vector<uint8_t> out(static_cast<size_t>(n) * C * H * W);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = ds.image(first + i);
    uint8_t* dst = out.data() + static_cast<size_t>(i) * C * H * W;
    for (int c = 0; c < C; ++c)
      for (int p = 0; p < H * W; ++p) dst[static_cast<size_t>(p) * C + c] = src[static_cast<size_t>(c) * H * W + p];
  }
  return out;
}

std::vector<std::string> checkpoint_class_names(const Checkpoint& ck) {
  std::vector<std::string> names;
  std::string cur;
  for (char ch : ck.get("class_names", "") + ",") {
    if (ch == ',') {
      if (!cur.empty()) names.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  return names;
}

std::string human_bytes(uint64_t b) {
  char s[64];
  if (b < 10 * 1024) std::snprintf(s, sizeof s, "%llu B", static_cast<unsigned long long>(b));
  else if (b < 10 * 1024 * 1024) std::snprintf(s, sizeof s, "%.1f KiB", static_cast<double>(b) / 1024);
  else std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / (1024 * 1024));
  return s;
}

}  // namespace octet::app
