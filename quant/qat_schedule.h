// quant/qat_schedule.h: when fake quant starts and ranges and BN freeze;
// the schedule is a pure function of the global step.
//
// phase_at(config, step, total_steps):
//   step <  quant delay  : every ActQuant and weight quantizer observes only
//                          (output == input, bit for bit); ranges are measured
//   step >= quant delay  : fake quant on at the configured locations; ActQuants
//                          elsewhere stay observe-only (still measured, so the
//                          exporter can quantize those tensors)
//   step >= observer freeze : ranges stop moving
//   step >= BN freeze       : ConvBn uses running statistics only (no batch stats,
//                             no running-stat updates), as at inference
// The trainer calls apply_phase(model, phase_at(...)) before every step.
#pragma once

#include <cstdint>

#include "nn/module.h"
#include "quant/qat_config.h"

namespace octet::quant {

struct QatPhase {
  bool fake_quant = false;        // fake quant on at the configured locations
  bool observers_frozen = false;
  bool bn_frozen = false;
  int64_t step = 0;               // the training step (keys stochastic rounding)
};
QatPhase phase_at(const QatConfig& config, int64_t step, int64_t total_steps);
// Sets every ActQuant, WeightQuant and ConvBn of `model` to `phase`
// (initializing LSQ steps from the observed ranges on the first switch).
// Stochastic rounding: the i-th quantizer of the model (named_modules order)
// draws from stream i of a generator seeded by phase.step, so the draws of a
// step depend on the step alone, and a resumed run rounds exactly as the
// uninterrupted one did (no generator state to checkpoint).
void apply_phase(nn::Module& model, const QatPhase& phase);

}  // namespace octet::quant
