// quant/qat.h: quantization-aware training (QAT) and post-training
// quantization (PTQ) of the ResNet family, with one mechanism for both.
// This header includes all of it; each concern has its own header:
//
//   quant/qat_config.h      QatConfig: every knob (grid, op, locations, ranges,
//                           schedule), its key=value form and validation
//   quant/qat_schedule.h    QatPhase, phase_at, apply_phase: what happens when
//   quant/qat_modules.h     ActQuant, WeightQuant, ConvBn: the quantizers and the
//                           conv + BN fused for QAT
//   quant/qat_prepare.h     prepare(): where the quantizers sit (placement by
//                           dotted name); quant_edges(): the engine graph
//   quant/ptq.h             calibrate (PTQ), cross-layer equalization, bias correction
//   quant/qat_checkpoint.h  the config and observer states in checkpoints; load_model
//   quant/qat_training.h    attach_qat: QAT in the trainer (not included here)
//
// prepare(model, config) rewrites a float ResNet IN PLACE so that it computes
// in training what the integer engine will compute at inference: every
// (conv, BN) pair becomes one ConvBn that fake-quantizes the FOLDED weight,
// the fc gets a per-channel WeightQuant, and every tensor the engine holds as
// int8 gets one ActQuant, which observes the tensor's range and, once enabled,
// fake-quantizes it.
//
// The schedule is a pure function of the global step (phase_at): before the
// quant delay every quantizer only observes (output == input, bit for bit);
// from it on, fake quant is on at the configured locations; from the observer
// freeze the ranges stop moving; from the BN freeze ConvBn uses running
// statistics only. The trainer calls apply_phase(model, phase_at(...)) before
// every step.
//
// PTQ (calibrate) runs the same prepared model over a few hundred training
// images with fake quant off, freezes the observed ranges and turns fake
// quant on: the same kind of model a QAT run produces, so the exporter
// (quant/export.h) treats both alike.
//
// Command line: `octet train --qat [knobs]` (QAT, resumable, --init CKPT to
// fine-tune a float model), `octet calibrate CKPT --observer K -o OUT` (PTQ).
#pragma once

#include "quant/ptq.h"
#include "quant/qat_checkpoint.h"
#include "quant/qat_config.h"
#include "quant/qat_modules.h"
#include "quant/qat_prepare.h"
#include "quant/qat_schedule.h"

// Included by qat.h before the split and relied on by files that include only
// qat.h (the quant tests call the fake-quant ops): kept.
#include <functional>

#include "quant/fake_quant.h"
