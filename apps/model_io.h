// apps/model_io.h: what export, eval, run, inspect and compare share: telling
// model files from checkpoints, loading a checkpoint as a quantized model
// (PTQ-calibrating a float one on request), loading data in the shape a model
// takes, and dataset images in the engine's layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/args.h"
#include "core/dataset.h"
#include "quant/export.h"
#include "quant/qat.h"

namespace octet::app {

// True if the file starts with the Octet model file magic ("OCTET\0\r\n");
// false for anything else (checkpoints start with "OCTETCKP"). Throws if the
// file cannot be read.
bool is_model_file(const std::string& path);

// The PTQ flags, for commands that accept a float checkpoint:
//   --calib-data PATH (default: --data), --observer KIND (minmax), --calib-images N (1000),
//   --weight-bits B, --act-bits B, --qat-config FILE (any QatConfig key = value)
struct PtqFlags {
  std::string data;
  std::string observer = "minmax";
  int images = 1000;
  int weight_bits = 8, act_bits = 8;
  std::string config_file;
  static PtqFlags read(Args& a, const std::string& data_fallback);
  static const char* usage();
};

// Loads a checkpoint; a float one is prepared and PTQ-calibrated with `ptq`
// on its train split when `need_quantized` (else returned as it is).
// Prints one line about what it did.
quant::LoadedModel load_checkpoint_model(const std::string& path, bool need_quantized, const PtqFlags& ptq);

// How to load data for a model that takes `shape` images (`who` names the
// model in messages, e.g. "the input of model.oct"): that channel count (an
// image tree converts its files to it) and that size, never resized: images
// of another size are an error naming both shapes.
LoadOptions data_options(const ImageShape& shape, const std::string& who);
// The same for a loaded checkpoint: its recorded shape or, for a checkpoint
// older than that metadata, 3 channels and any size (what it meant then).
LoadOptions data_options(const quant::LoadedModel& m, const std::string& path);

// Images [first, first + n) of a dataset (CHW) as NHWC uint8, the engine's layout.
std::vector<uint8_t> images_nhwc(const Dataset& ds, int64_t first, int64_t n);

// Comma-separated names of a checkpoint's "class_names" (empty if absent).
std::vector<std::string> checkpoint_class_names(const Checkpoint& ck);

// "12.3 KB"-style sizes.
std::string human_bytes(uint64_t bytes);

}  // namespace octet::app
