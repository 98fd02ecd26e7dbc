// quant/qat_schedule.cpp: phase_at and apply_phase.
#include "quant/qat_schedule.h"

#include "quant/qat_modules.h"

namespace octet::quant {

QatPhase phase_at(const QatConfig& c, int64_t step, int64_t total) {
  QatPhase p;
  const int64_t d = c.quant_delay_at(total), o = c.observer_freeze_at(total), b = c.bn_freeze_at(total);
  p.fake_quant = d >= 0 && step >= d;
  p.observers_frozen = o >= 0 && step >= o;
  p.bn_frozen = b >= 0 && step >= b;
  p.step = step;
  return p;
}

void apply_phase(nn::Module& model, const QatPhase& phase) {
  constexpr uint64_t kRoundingTag = 0x5704c0ull << 40;  // keeps these streams apart from other users of a step seed
  const uint64_t seed = kRoundingTag ^ static_cast<uint64_t>(phase.step);
  uint64_t stream = 0;  // one per quantizer, in named_modules order
  for (auto& [name, m] : model.named_modules()) {
    if (auto* a = dynamic_cast<ActQuant*>(m)) {
      a->set_fake_quant(phase.fake_quant);
      a->freeze_observer(phase.observers_frozen);
      a->rounding_rng().reseed(seed, stream++);
    } else if (auto* w = dynamic_cast<WeightQuant*>(m)) {
      w->set_fake_quant(phase.fake_quant);
      w->rounding_rng().reseed(seed, stream++);
    } else if (auto* c = dynamic_cast<ConvBn*>(m)) {
      c->freeze_bn(phase.bn_frozen);
    }
  }
}

}  // namespace octet::quant
