// quant/qat_prepare.cpp: prepare() (placement by dotted name), the listings
// act_quants / conv_bns, and quant_edges().
#include "quant/qat_prepare.h"

#include <memory>
#include <set>
#include <stdexcept>

#include "quant/qat_schedule.h"

namespace octet::quant {

namespace {

std::shared_ptr<nn::Module> find_ptr(nn::Module& root, const std::string& dotted) {
  const size_t dot = dotted.rfind('.');
  nn::Module& parent = dot == std::string::npos ? root : root.find(dotted.substr(0, dot));
  return parent.child_ptr(dot == std::string::npos ? dotted : dotted.substr(dot + 1));
}

// M at `name` -> Sequential{"0": M, "1": aq}; returns aq.
std::shared_ptr<ActQuant> wrap(nn::Module& root, const std::string& name, std::shared_ptr<ActQuant> aq) {
  auto m = find_ptr(root, name);
  auto seq = std::make_shared<nn::Sequential>();
  seq->append(m);
  seq->append(aq);
  root.replace(name, seq);
  return aq;
}

ActQuant* aq_at(nn::Module& root, const std::string& name) {
  auto* a = dynamic_cast<ActQuant*>(&root.find(name));
  if (!a) throw std::logic_error("quant: expected an ActQuant at '" + name + "' (is the model prepared?)");
  return a;
}

}  // namespace

bool is_prepared(const nn::Module& model) {
  for (auto& [n, m] : const_cast<nn::Module&>(model).named_modules())
    if (dynamic_cast<ConvBn*>(m)) return true;
  return false;
}

void prepare(nn::ResNet& model, const QatConfig& cfg) {
  cfg.validate();
  if (is_prepared(model)) throw std::logic_error("prepare: the model is already prepared");
  std::set<std::string> used_overrides;
  auto bits_for = [&](const std::string& name, int fallback) {
    auto it = cfg.bits_overrides.find(name);
    if (it == cfg.bits_overrides.end()) return fallback;
    used_overrides.insert(name);
    return it->second;
  };
  auto wspec = [&](const std::string& name) {
    QuantizerSpec s;
    s.op = cfg.op;
    s.round = cfg.round;
    s.bits = bits_for(name, cfg.weight_bits);
    s.is_signed = true;
    s.narrow = cfg.narrow_weights;
    s.symmetric = cfg.symmetric_weights;
    s.in_location = cfg.quantize_weights;
    return s;
  };
  auto act = [&](const std::string& name, bool is_signed, bool in_location) {
    QuantizerSpec s;
    s.op = cfg.op;
    s.round = cfg.round;
    s.bits = bits_for(name, cfg.act_bits);
    s.is_signed = is_signed;
    s.narrow = false;
    s.symmetric = cfg.op != QuantOp::fake_quant;
    s.in_location = in_location;
    return std::make_shared<ActQuant>(s, cfg);
  };
  const bool relu_signed = cfg.signed_activations;
  const bool acts = cfg.quantize_activations;

  // 1. conv + BN -> ConvBn; the ActQuant of each group's output.
  const std::vector<nn::ConvBnRelu> groups = model.conv_bn_relu_groups();
  for (const auto& g : groups) {
    auto conv = std::dynamic_pointer_cast<nn::Conv2d>(find_ptr(model, g.conv));
    auto bn = std::dynamic_pointer_cast<nn::BatchNorm2d>(find_ptr(model, g.bn));
    if (!conv || !bn) throw std::logic_error("prepare: '" + g.conv + "' / '" + g.bn + "' is not a Conv2d / BatchNorm2d");
    auto cb = std::make_shared<ConvBn>(conv, bn, wspec(g.conv), cfg.per_channel_weights);
    model.replace(g.conv, cb);
    model.replace(g.bn, std::make_shared<nn::Identity>());
    if (!g.relu.empty()) {
      wrap(model, g.relu, act(g.relu + ".1", relu_signed, acts));
    } else {
      wrap(model, g.bn, act(g.bn + ".1", true, acts));
    }
  }
  // 2. block outputs (Add + ReLU) and the add-input slots.
  const auto& rc = model.config();
  std::shared_ptr<ActQuant> last;
  for (size_t s = 0; s < rc.blocks.size(); ++s) {
    for (int b = 0; b < rc.blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const std::string out = p + (rc.bottleneck ? "relu3" : "relu2");
      last = wrap(model, out, act(out + ".1", relu_signed, acts));
      if (cfg.add_inputs != AddInputs::off) {
        auto a = act(p + "add.input_a", true, true);
        model.replace(p + "add.input_a", a);
        std::shared_ptr<ActQuant> bq = cfg.add_inputs == AddInputs::tied
                                           ? std::make_shared<ActQuant>(a, /*observes=*/true, true)
                                           : act(p + "add.input_b", true, true);
        model.replace(p + "add.input_b", bq);
      }
    }
  }
  if (!last) throw std::logic_error("prepare: the model has no blocks");
  // 3. average pool (follows the last block's grid), fc weight and logits.
  wrap(model, "avgpool", std::make_shared<ActQuant>(last, /*observes=*/false, last->in_location()));
  auto fc = std::dynamic_pointer_cast<nn::Linear>(find_ptr(model, "fc"));
  if (!fc) throw std::logic_error("prepare: 'fc' is not a Linear");
  fc->set_weight_transform(std::make_shared<WeightQuant>(wspec("fc.0"), cfg.per_channel_weights, fc->out_features));
  wrap(model, "fc", act("fc.1", true, cfg.quantize_output));
  // 4. the model input (optional; the engine's input is the exact pixels).
  if (cfg.quantize_input) {
    auto& stem = static_cast<ConvBn&>(model.find(groups.front().conv));
    stem.set_input_quant(act(groups.front().conv + ".input_quant", true, true));
  }
  for (auto& [name, bits] : cfg.bits_overrides)
    if (!used_overrides.count(name))
      throw std::invalid_argument("qat config 'bits." + name + "': no ConvBn, Linear or ActQuant of that name");
  model.train(model.training());
  apply_phase(model, QatPhase{});
}


std::vector<std::pair<std::string, ActQuant*>> act_quants(nn::Module& model) {
  std::vector<std::pair<std::string, ActQuant*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* a = dynamic_cast<ActQuant*>(m)) out.emplace_back(name, a);
  return out;
}

std::vector<std::pair<std::string, ConvBn*>> conv_bns(nn::Module& model) {
  std::vector<std::pair<std::string, ConvBn*>> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* c = dynamic_cast<ConvBn*>(m)) out.emplace_back(name, c);
  return out;
}

std::vector<QuantEdge> quant_edges(nn::ResNet& model) {
  if (!is_prepared(model)) throw std::logic_error("quant_edges: the model is not prepared (call prepare first)");
  std::vector<QuantEdge> edges;
  auto conv_edge = [&](const std::string& name, const ActQuant* in, const std::string& out, bool relu) {
    QuantEdge e;
    e.kind = QuantEdge::Kind::conv;
    e.name = name;
    e.conv = dynamic_cast<ConvBn*>(&model.find(name));
    if (!e.conv) throw std::logic_error("quant_edges: '" + name + "' is not a ConvBn");
    e.input = in;
    e.output = aq_at(model, out);
    e.relu = relu;
    edges.push_back(e);
    return e.output;
  };
  const ActQuant* cur = conv_edge("conv1", nullptr, "relu.1", true);
  const auto& rc = model.config();
  if (rc.imagenet_stem) {
    QuantEdge e;
    e.kind = QuantEdge::Kind::max_pool;
    e.name = "maxpool";
    e.input = e.output = cur;
    edges.push_back(e);
  }
  for (size_t s = 0; s < rc.blocks.size(); ++s) {
    for (int b = 0; b < rc.blocks[s]; ++b) {
      const std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(b) + ".";
      const ActQuant* x = cur;
      const ActQuant* y = conv_edge(p + "conv1", x, p + "relu1.1", true);
      std::string out;
      if (rc.bottleneck) {
        y = conv_edge(p + "conv2", y, p + "relu2.1", true);
        y = conv_edge(p + "conv3", y, p + "bn3.1", false);
        out = p + "relu3.1";
      } else {
        y = conv_edge(p + "conv2", y, p + "bn2.1", false);
        out = p + "relu2.1";
      }
      const ActQuant* sc = x;
      nn::Module& shortcut = model.find(p + "shortcut");
      if (shortcut.type() == "Sequential")
        sc = conv_edge(p + "shortcut.0", x, p + "shortcut.1.1", false);
      QuantEdge e;
      e.kind = QuantEdge::Kind::add;
      e.name = p + "add";
      e.input = y;
      e.input_b = sc;
      e.output = aq_at(model, out);
      e.relu = true;
      e.add_slot_a = dynamic_cast<const ActQuant*>(&model.find(p + "add.input_a"));
      e.add_slot_b = dynamic_cast<const ActQuant*>(&model.find(p + "add.input_b"));
      edges.push_back(e);
      cur = e.output;
    }
  }
  QuantEdge pool;
  pool.kind = QuantEdge::Kind::avg_pool;
  pool.name = "avgpool.0";
  pool.input = cur;
  pool.output = aq_at(model, "avgpool.1");
  edges.push_back(pool);
  QuantEdge fc;
  fc.kind = QuantEdge::Kind::linear;
  fc.name = "fc.0";
  fc.linear = dynamic_cast<nn::Linear*>(&model.find("fc.0"));
  if (!fc.linear) throw std::logic_error("quant_edges: 'fc.0' is not a Linear");
  fc.input = pool.output;
  fc.output = aq_at(model, "fc.1");
  edges.push_back(fc);
  return edges;
}

}  // namespace octet::quant
