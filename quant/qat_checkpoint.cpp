// quant/qat_checkpoint.cpp: write_qat_meta / read_qat_meta, the QatConfig of
// a checkpoint, load_model.
#include "quant/qat_checkpoint.h"

#include <exception>
#include <map>
#include <stdexcept>

#include "nn/trainer.h"
#include "quant/observer.h"
#include "quant/qat_prepare.h"

namespace octet::quant {

namespace {
constexpr const char* kQatPrefix = "qat.";
constexpr const char* kObserverPrefix = "qat.observer.";
}  // namespace

void write_qat_meta(nn::Module& model, const QatConfig& config, Checkpoint& ck) {
  for (auto& [k, v] : config.to_kv()) ck.meta[kQatPrefix + k] = v;
  for (auto& [name, a] : act_quants(model)) {
    Observer* o = a->leader() ? nullptr : a->observer();
    if (o && !o->frozen() && o->has_data()) ck.meta[kObserverPrefix + name] = o->state().encode();
  }
}

void read_qat_meta(nn::Module& model, const Checkpoint& ck) {
  for (auto& [name, a] : act_quants(model)) {
    if (a->leader() || !a->observer()) continue;
    auto it = ck.meta.find(kObserverPrefix + name);
    const bool frozen = a->observer_frozen();
    if (it != ck.meta.end()) {
      try {
        a->observer()->load(ObserverState::decode(it->second));
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error("checkpoint " + ck.source + ": observer state of '" + name + "': " + e.what());
      }
    }
    a->freeze_observer(frozen);
  }
}

std::optional<QatConfig> qat_config_from_checkpoint(const Checkpoint& ck) {
  std::map<std::string, std::string> kv;
  const std::string obs = kObserverPrefix;
  for (auto& [k, v] : ck.meta)
    if (k.rfind(kQatPrefix, 0) == 0 && k.rfind(obs, 0) != 0) kv[k.substr(4)] = v;
  if (kv.empty()) return std::nullopt;
  try {
    return QatConfig::from_kv(kv);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("checkpoint " + ck.source + ": " + e.what());
  }
}

LoadedModel load_model(const Checkpoint& ck) {
  LoadedModel out;
  out.checkpoint = ck;
  const std::string where = "checkpoint " + ck.source;
  int classes = 0;
  try {
    classes = std::stoi(ck.get("classes"));
  } catch (const std::logic_error&) {
    throw std::runtime_error(where + ": metadata 'classes' is not a number");
  }
  out.input = nn::input_shape_from_checkpoint(ck, &out.input_recorded);
  out.model = nn::make_model(ck.get("model"), classes, 0, nn::ConvInit::torch, out.input.channels);
  out.qat = qat_config_from_checkpoint(ck);
  if (out.qat) prepare(*out.model, *out.qat);
  try {
    out.model->load_state(ck.with_prefix("model."));
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": " + e.what());
  }
  if (out.qat) read_qat_meta(*out.model, ck);
  out.preprocess = nn::preprocess_from_checkpoint(ck);
  return out;
}

LoadedModel load_model(const std::string& path) { return load_model(load_checkpoint(path)); }

}  // namespace octet::quant
