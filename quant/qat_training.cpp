#include "quant/qat_training.h"

#include <stdexcept>

#include "quant/qat_checkpoint.h"
#include "quant/qat_modules.h"
#include "quant/qat_prepare.h"
#include "quant/qat_schedule.h"

namespace octet::quant {

namespace {
int64_t total_steps(const nn::Trainer& t) { return t.steps_per_epoch() * t.config().epochs; }
}  // namespace

void check_qat_compatible(const nn::TrainConfig& train) {
  if (train.ema_decay > 0)
    throw std::invalid_argument("--ema does not go with --qat (averaging would mix the quantizers' state)");
  if (train.sam_rho > 0)
    throw std::invalid_argument("--sam does not go with --qat (the second pass would move the quantizers' ranges)");
  if (train.reparam != "none")
    throw std::invalid_argument(
        "--reparam is for float training; train float with it, then give its checkpoint (the folded, plain model) "
        "to --qat --init");
}

void attach_qat(nn::Trainer& trainer, const QatConfig& config) {
  nn::Module* model = trainer.model_ptr().get();
  if (!is_prepared(*model)) throw std::logic_error("attach_qat: the trainer's model is not prepared (quant::prepare)");
  for (auto& [k, v] : config.to_kv()) trainer.extra_config["qat." + k] = v;
  trainer.on_save = [model, config](Checkpoint& ck) { write_qat_meta(*model, config, ck); };
  trainer.on_restore = [model](const Checkpoint& ck) { read_qat_meta(*model, ck); };
  const int64_t total = total_steps(trainer);
  trainer.on_step_begin = [model, config, total](int64_t step) { apply_phase(*model, phase_at(config, step, total)); };
  // Data-parallel: each rank sees its shard of the batch, and the activation
  // observers combine what the ranks saw, so every rank keeps the ranges of
  // the global batch. (Weights are equal on every rank: their observers need
  // nothing.)
  if (trainer.group().size() > 1)
    for (auto& [name, m] : model->named_modules())
      if (auto* a = dynamic_cast<ActQuant*>(m); a && a->observer()) a->observer()->set_group(&trainer.group());
}

int64_t quant_delay_step(const nn::Trainer& trainer, const QatConfig& config) {
  return config.quant_delay_at(total_steps(trainer));
}

}  // namespace octet::quant
