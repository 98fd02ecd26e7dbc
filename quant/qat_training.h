// quant/qat_training.h: quantization-aware training in the trainer, one call.
//
//   auto model = nn::make_model("resnet20", 10, seed);
//   quant::prepare(*model, config);          // quant/qat_prepare.h
//   nn::Trainer t(train_config, train, &test, model);
//   quant::attach_qat(t, config);            // before resume(), fork() or fit()
//   t.fit();
//
// attach_qat wires the three things a QAT run needs from the trainer:
//   - identity: the configuration as "qat.<key>" in every checkpoint and in
//     config.txt (a resume must match it; a fork lists what changed);
//   - state: the observers' exact states into every checkpoint, and back on
//     resume or fork (write_qat_meta / read_qat_meta);
//   - schedule: before every step, apply_phase(phase_at(config, step, total)),
//     total = the run's steps (epochs x steps per epoch).
// It sets the trainer's on_save, on_restore and on_step_begin; a caller that
// needs its own step hook wraps the one attach_qat set. In a data-parallel
// run (Trainer::distribute first) the activation observers observe across
// the ranks (quant/observer.h), so the ranges are the global batch's at any
// number of ranks (up to float rounding).
#pragma once

#include "nn/trainer.h"
#include "quant/qat_config.h"

namespace octet::quant {

// Throws std::invalid_argument when the training configuration has a feature
// QAT does not go with: a weight average (it would average the quantizers'
// state), sharpness-aware minimization (its second pass would move the
// ranges), train-time branches (train float with them, then QAT from the
// folded model).
void check_qat_compatible(const nn::TrainConfig& train);

// Throws std::logic_error if the trainer's model is not prepared for QAT.
void attach_qat(nn::Trainer& trainer, const QatConfig& config);

// The step at which fake quant starts in `trainer`'s run (-1: never).
int64_t quant_delay_step(const nn::Trainer& trainer, const QatConfig& config);

}  // namespace octet::quant
