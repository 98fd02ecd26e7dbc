// quant/analysis.cpp: per-layer error analysis (see analysis.h).
#include "quant/analysis.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>

#include "engine/fixedpoint.h"
#include "nn/module.h"

namespace octet::quant {

namespace {

// Records the input and output of the module it stands in for.
class Recorder : public nn::Module {
 public:
  Recorder() : Module("Recorder") {}
  Tensor forward(const Tensor& x) override {
    in = x.clone();
    Tensor y = inner->forward(x);
    out = y.clone();
    return y;
  }
  std::shared_ptr<nn::Module> inner;
  Tensor in, out;
};

int argmax_row(const float* p, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (p[i] > p[best]) best = i;
  return best;
}

double sqnr_db(double signal, double noise) {
  if (noise <= 0) return std::numeric_limits<double>::infinity();
  if (signal <= 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

}  // namespace

const char* quant_mode_name(QuantMode m) {
  switch (m) {
    case QuantMode::float32: return "float";
    case QuantMode::weights_only: return "weights";
    case QuantMode::fake_quant: return "fakequant";
  }
  return "?";
}

QuantSwitches set_quant_mode(nn::Module& model, QuantMode mode) {
  QuantSwitches s;
  for (auto& [name, m] : model.named_modules()) {
    if (auto* a = dynamic_cast<ActQuant*>(m)) {
      s.acts.emplace_back(a, a->fake_quant_enabled());
      a->set_fake_quant(mode == QuantMode::fake_quant);
    } else if (auto* w = dynamic_cast<WeightQuant*>(m)) {
      s.weights.emplace_back(w, w->fake_quant_enabled());
      w->set_fake_quant(mode != QuantMode::float32);
    }
  }
  return s;
}

void restore_quant_mode(const QuantSwitches& s) {
  for (auto& [a, on] : s.acts) a->set_fake_quant(on);
  for (auto& [w, on] : s.weights) w->set_fake_quant(on);
}

Capture capture_activations(nn::ResNet& model, const Tensor& batch, QuantMode mode) {
  model.eval();
  NoGradGuard no_grad;
  const QuantSwitches sw = set_quant_mode(model, mode);
  std::vector<std::pair<std::string, std::shared_ptr<Recorder>>> recs;
  std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> originals;
  const auto restore = [&] {
    for (auto it = originals.rbegin(); it != originals.rend(); ++it) model.replace(it->first, it->second);
    restore_quant_mode(sw);
  };
  Capture c;
  try {
    for (auto& [name, aq] : act_quants(model)) {
      auto rec = std::make_shared<Recorder>();
      rec->inner = model.replace(name, rec);
      originals.emplace_back(name, rec->inner);
      recs.emplace_back(name, rec);
    }
    c.logits = model.forward(batch).clone();
  } catch (...) {
    restore();
    throw;
  }
  restore();
  for (auto& [name, rec] : recs) {
    if (!rec->in.defined()) continue;  // not on the forward path
    c.in[name] = rec->in;
    c.out[name] = rec->out;
  }
  return c;
}

Comparison compare_layers(nn::ResNet& model, const IntSim& sim, const std::map<std::string, uint32_t>& tensor_of,
                          const std::map<std::string, std::string>& op_of, const Tensor& images,
                          const uint8_t* pixels_nhwc) {
  const int64_t n = images.dim(0);
  const int64_t per_image = images.numel() / std::max<int64_t>(n, 1);
  if (static_cast<size_t>(per_image) != sim.input_bytes())
    throw std::invalid_argument("compare_layers: the images do not match the model's input size");
  std::map<std::string, const ActQuant*> aq_of;
  for (auto& [name, aq] : act_quants(model)) aq_of[name] = aq;

  // Energy sums per ActQuant name.
  struct Acc {
    double f2 = 0, w = 0, q = 0, i = 0, iq = 0, local = 0, clip = 0;
    int64_t values = 0;
  };
  std::map<std::string, Acc> acc;
  Comparison cmp;
  cmp.images = static_cast<int>(n);
  const int classes = sim.num_classes();
  constexpr int64_t kChunk = 32;  // images per forward: bounds the memory of the captures
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t m = std::min(kChunk, n - start);
    Tensor chunk = Tensor::from(
        {m, images.dim(1), images.dim(2), images.dim(3)},
        std::span<const float>(images.data() + start * per_image, static_cast<size_t>(m * per_image)));
    const Capture f = capture_activations(model, chunk, QuantMode::float32);
    const Capture w = capture_activations(model, chunk, QuantMode::weights_only);
    const Capture q = capture_activations(model, chunk, QuantMode::fake_quant);
    std::vector<IntSim::Trace> traces;
    for (int64_t k = 0; k < m; ++k) traces.push_back(sim.run_image(pixels_nhwc + (start + k) * per_image));

    for (int64_t k = 0; k < m; ++k) {
      const int af = argmax_row(f.logits.data() + k * classes, classes);
      const int aq = argmax_row(q.logits.data() + k * classes, classes);
      const std::vector<int8_t>& li = traces[size_t(k)].values[sim.model().output];
      const int ai = static_cast<int>(std::max_element(li.begin(), li.end()) - li.begin());
      cmp.argmax_float_fq += af == aq;
      cmp.argmax_fq_int += aq == ai;
      cmp.argmax_float_int += af == ai;
    }

    for (const auto& [name, tid] : tensor_of) {
      auto fi = f.out.find(name);
      if (fi == f.out.end()) continue;
      const Tensor& F = fi->second;
      const Tensor& W = w.out.at(name);
      const Tensor& Q = q.out.at(name);
      const Tensor& X = q.in.at(name);
      const int64_t vals = F.numel() / m;
      if (static_cast<int64_t>(traces[0].values[tid].size()) != vals) continue;  // shapes differ: skip
      Acc& a = acc[name];
      a.values = vals;
      const QuantParams g = aq_of.at(name)->params();
      const double lo = g.real_min(), hi = g.real_max();
      for (int64_t k = 0; k < m; ++k) {
        const std::vector<int8_t>& iv = traces[size_t(k)].values[tid];
        for (int64_t j = 0; j < vals; ++j) {
          const size_t idx = static_cast<size_t>(k * vals + j);
          const double fv = F.data()[idx], wv = W.data()[idx], qv = Q.data()[idx], xv = X.data()[idx];
          const double ivr = sim.real(tid, iv[size_t(j)]);
          a.f2 += fv * fv;
          a.w += (wv - fv) * (wv - fv);
          a.q += (qv - fv) * (qv - fv);
          a.i += (ivr - fv) * (ivr - fv);
          a.iq += (ivr - qv) * (ivr - qv);
          const double e2 = (qv - xv) * (qv - xv);
          a.local += e2;
          if (xv < lo || xv > hi) a.clip += e2;
        }
      }
    }
  }

  // In engine order.
  std::vector<std::pair<uint32_t, std::string>> order;
  for (const auto& [name, tid] : tensor_of)
    if (acc.count(name)) order.emplace_back(tid, name);
  std::sort(order.begin(), order.end());
  for (const auto& [tid, name] : order) {
    const Acc& a = acc.at(name);
    LayerError L;
    L.name = name;
    auto oi = op_of.find(name);
    L.op = oi == op_of.end() ? "" : oi->second;
    L.tensor = tid;
    L.values = a.values;
    const double cnt = static_cast<double>(a.values) * static_cast<double>(n);
    L.float_rms = std::sqrt(a.f2 / cnt);
    L.rmse_weights = std::sqrt(a.w / cnt);
    L.rmse_fakequant = std::sqrt(a.q / cnt);
    L.rmse_integer = std::sqrt(a.i / cnt);
    L.rmse_int_vs_fq = std::sqrt(a.iq / cnt);
    L.sqnr_weights = sqnr_db(a.f2, a.w);
    L.sqnr_fakequant = sqnr_db(a.f2, a.q);
    L.sqnr_integer = sqnr_db(a.f2, a.i);
    L.clip_fraction = a.local > 0 ? a.clip / a.local : 0.0;
    const double act = std::max(0.0, a.q - a.w);  // what the activation quantizers add on top of the weights
    const double total = a.w + act + a.iq;
    if (total > 0) {
      L.share_weight = a.w / total;
      L.share_clip = act * L.clip_fraction / total;
      L.share_round = act * (1 - L.clip_fraction) / total;
      L.share_integer = a.iq / total;
    }
    cmp.layers.push_back(L);
  }
  return cmp;
}

std::string format_comparison(const Comparison& c) {
  std::string s;
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %-20s %8s | %7s %7s %7s | %9s %9s %9s | %5s %5s %5s %5s\n", "tensor", "op",
                "float rms", "SQNR w", "SQNR fq", "SQNR int", "RMSE fq", "RMSE int", "int-fq", "%w", "%clip", "%round",
                "%int");
  s += line;
  s += std::string(std::strlen(line) - 1, '-') + "\n";
  for (const LayerError& L : c.layers) {
    std::snprintf(line, sizeof line,
                  "%-24s %-20s %8.4f | %7.1f %7.1f %7.1f | %9.5f %9.5f %9.5f | %5.1f %5.1f %5.1f %5.1f\n",
                  L.name.c_str(), L.op.c_str(), L.float_rms, L.sqnr_weights, L.sqnr_fakequant, L.sqnr_integer,
                  L.rmse_fakequant, L.rmse_integer, L.rmse_int_vs_fq, 100 * L.share_weight, 100 * L.share_clip,
                  100 * L.share_round, 100 * L.share_integer);
    s += line;
  }
  std::snprintf(line, sizeof line,
                "\nargmax agreement over %d images: float vs fakequant %d, fakequant vs integer %d, float vs integer %d\n",
                c.images, c.argmax_float_fq, c.argmax_fq_int, c.argmax_float_int);
  s += line;
  return s;
}

double double_rounding_share(int32_t m0, int32_t shift) {
  const double m = std::ldexp(static_cast<double>(m0), shift - 31);
  if (!(m > 0)) throw std::invalid_argument("double_rounding_share: the multiplier must be positive");
  // Accumulators from -128 / M to 128 / M: every one when they are few, else
  // an odd stride, so the exact results do not line up with the half steps.
  const int64_t reach = std::min<int64_t>(static_cast<int64_t>(std::ceil(128.0 / m)), 2147483647);
  int64_t stride = std::max<int64_t>(1, 2 * reach / 65536);
  stride |= 1;
  int64_t differ = 0, total = 0;
  for (int64_t acc = -reach; acc <= reach; acc += stride) {
    const int32_t twice = engine::MultiplyByQuantizedMultiplier(static_cast<int32_t>(acc), m0, shift);
    const double once = std::nearbyint(static_cast<double>(acc) * m);  // the default rounding mode: half to even
    differ += static_cast<double>(twice) != once;
    ++total;
  }
  return static_cast<double>(differ) / static_cast<double>(total);
}

}  // namespace octet::quant
