// quant/qat_checkpoint.h: QAT and PTQ checkpoints, and loading any
// checkpoint of `octet train` or `octet calibrate` as a ready model.
//
// A prepared model's named_state() differs from the float model's (conv1.weight
// stays, bn1.* moves to conv1.bn.*, ActQuant buffers appear). A QAT checkpoint
// carries the QatConfig as metadata "qat.<key>" (to_kv) and the exact observer
// states as "qat.observer.<dotted ActQuant name>", so load_model() can do
// make_model -> prepare(config) -> load_state.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/augment.h"
#include "core/checkpoint.h"
#include "core/dataset.h"
#include "nn/module.h"
#include "nn/resnet.h"
#include "quant/qat_config.h"

namespace octet::quant {

// Adds "qat.<key>" (config) and "qat.observer.<name>" (observer states of
// unfrozen observers) to ck.meta.
void write_qat_meta(nn::Module& model, const QatConfig& config, Checkpoint& ck);
// Restores the observer states written by write_qat_meta (after load_state).
void read_qat_meta(nn::Module& model, const Checkpoint& ck);
// The QatConfig of a checkpoint, or nullopt for a float checkpoint.
std::optional<QatConfig> qat_config_from_checkpoint(const Checkpoint& ck);

struct LoadedModel {
  std::shared_ptr<nn::ResNet> model;
  std::optional<QatConfig> qat;  // set when the model is prepared (QAT or PTQ checkpoint)
  Preprocess preprocess;         // the run's exact float preprocessing
  // The shape of the images it was trained on (nn::input_shape_from_checkpoint):
  // the input the exporter declares. input_recorded is false for checkpoints
  // older than that metadata, whose shape is then 3 channels, 32x32.
  ImageShape input;
  bool input_recorded = false;
  Checkpoint checkpoint;         // metadata and tensors as loaded
};
// A checkpoint of `octet train` (float or --qat) or `octet calibrate` as a
// ready model: make_model (the stem takes the recorded channels) ->
// [prepare(config)] -> load_state -> observer states. Throws
// std::runtime_error naming the file and what is wrong.
LoadedModel load_model(const std::string& path);
LoadedModel load_model(const Checkpoint& ck);

}  // namespace octet::quant
