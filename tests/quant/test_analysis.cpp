// quant/analysis.h, the per-layer error analysis behind `octet compare`, on a
// small prepared ResNet (random weights, random BN statistics, PTQ-calibrated)
// and its export:
//   - set_quant_mode switches exactly the quantizers its mode names, and
//     restore_quant_mode puts every switch back;
//   - capture_activations: in float and weights-only mode every ActQuant
//     passes its input through, in fakequant mode its output is its input on
//     its grid; the logits are the model's own forward's; the model is left
//     as it was;
//   - compare_layers: every figure (RMSE, SQNR in dB, the clip fraction, the
//     four shares, argmax agreement) recomputed here from the captures and the
//     integer simulation's traces, over two chunks of images;
//   - hand-made tensors whose figures are known in closed form: the last
//     block driven to zero (zero signal, four identical versions: RMSE 0,
//     SQNR +inf, shares 0), a conv output clipped everywhere (clip fraction 1),
//     logits that are the fc bias placed on the logit grid by hand (SQNR, RMSE
//     and the clip / round split computed from those numbers), and a zero
//     float tensor whose quantized versions are not zero (SQNR -inf);
//   - format_comparison's table, and images of the wrong size refused.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/augment.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "engine/fixedpoint.h"
#include "engine/format.h"
#include "nn/resnet.h"
#include "quant/analysis.h"
#include "quant/export.h"
#include "quant/intsim.h"
#include "quant/qat.h"
#include "tests/quant/tiny_resnet.h"

using namespace octet;
using namespace octet::testing;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The export, its integer simulation and what compare_layers needs from it.
struct Exported {
  quant::ExportResult result;
  quant::IntSim sim;
  std::map<std::string, std::string> op_of;  // ActQuant name -> engine op
};

Exported exported(Prepared& p) {
  quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
  quant::IntSim sim(r.builder.desc());
  std::map<std::string, std::string> op_of;
  for (const auto& [op, aq] : r.op_output) op_of[aq] = op;
  return {std::move(r), std::move(sim), std::move(op_of)};
}

// Images for compare_layers: preprocessed NCHW floats and the same pixels NHWC.
struct Images {
  std::vector<uint8_t> chw, nhwc;
  Tensor x;
};

Images images(int n, uint64_t seed, const Preprocess& pre) {
  Images im;
  im.chw = random_images(n, seed);
  im.nhwc = to_nhwc(im.chw, n);
  im.x = preprocess_batch(im.chw, 0, n, pre);
  return im;
}

const quant::LayerError& layer_named(const quant::Comparison& c, const std::string& name) {
  for (const auto& L : c.layers)
    if (L.name == name) return L;
  FAIL("no layer '" << name << "' in the comparison");
  throw std::logic_error("unreachable");
}

quant::ActQuant& act_quant(nn::ResNet& m, const std::string& name) { return dynamic_cast<quant::ActQuant&>(m.find(name)); }

// Every quantizer's switch, by name.
std::map<std::string, bool> switches(nn::Module& m) {
  std::map<std::string, bool> s;
  for (auto& [name, mod] : m.named_modules()) {
    if (auto* a = dynamic_cast<quant::ActQuant*>(mod)) s[name] = a->fake_quant_enabled();
    if (auto* w = dynamic_cast<quant::WeightQuant*>(mod)) s[name] = w->fake_quant_enabled();
  }
  return s;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (!(a.data()[i] == b.data()[i])) return false;
  return true;
}

// A figure against its expected value: equal infinities, or relatively close.
void check_figure(const char* what, double got, double want, double rel = 1e-9) {
  INFO(what, ": got ", got, ", expected ", want);
  if (std::isinf(want)) {
    CHECK(got == want);
  } else {
    CHECK(std::fabs(got - want) <= rel * std::max(1.0, std::fabs(want)));
  }
}

}  // namespace

TEST_CASE("analysis: set_quant_mode switches the quantizers of each mode, restore_quant_mode puts them back") {
  CHECK(std::string(quant::quant_mode_name(quant::QuantMode::float32)) == "float");
  CHECK(std::string(quant::quant_mode_name(quant::QuantMode::weights_only)) == "weights");
  CHECK(std::string(quant::quant_mode_name(quant::QuantMode::fake_quant)) == "fakequant");

  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 3);
  nn::ResNet& m = *p.model;
  // A mixed starting state, so that "put back" is not "all on".
  act_quant(m, "layer1.0.relu1.1").set_fake_quant(false);
  dynamic_cast<quant::ConvBn&>(m.find("layer2.0.conv2")).weight_quant().set_fake_quant(false);
  const std::map<std::string, bool> before = switches(m);
  int acts = 0, weights = 0;
  for (auto& [name, mod] : m.named_modules()) {
    acts += dynamic_cast<quant::ActQuant*>(mod) != nullptr;
    weights += dynamic_cast<quant::WeightQuant*>(mod) != nullptr;
  }
  REQUIRE(acts == static_cast<int>(quant::act_quants(m).size()));
  REQUIRE(weights == 10);  // 9 ConvBn + the fc

  for (quant::QuantMode mode : {quant::QuantMode::float32, quant::QuantMode::weights_only, quant::QuantMode::fake_quant}) {
    CAPTURE(quant::quant_mode_name(mode));
    const quant::QuantSwitches sw = quant::set_quant_mode(m, mode);
    CHECK(static_cast<int>(sw.acts.size()) == acts);
    CHECK(static_cast<int>(sw.weights.size()) == weights);
    for (auto& [name, mod] : m.named_modules()) {
      CAPTURE(name);
      if (auto* a = dynamic_cast<quant::ActQuant*>(mod))
        CHECK(a->fake_quant_enabled() == (mode == quant::QuantMode::fake_quant && a->in_location()));
      if (auto* w = dynamic_cast<quant::WeightQuant*>(mod))
        CHECK(w->fake_quant_enabled() == (mode != quant::QuantMode::float32 && w->spec().in_location));
    }
    quant::restore_quant_mode(sw);
    CHECK(switches(m) == before);
  }
}

TEST_CASE("analysis: capture_activations keeps every ActQuant's input and output, and leaves the model as it was") {
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 4);
  nn::ResNet& m = *p.model;
  const Tensor batch = preprocess_batch(random_images(8, 11), 0, 8, p.pre);
  m.eval();
  Tensor reference;
  {
    NoGradGuard g;
    reference = m.forward(batch).clone();  // calibrated: every quantizer on
  }
  const std::map<std::string, bool> before = switches(m);
  const size_t n_act = quant::act_quants(m).size();

  const quant::Capture f = quant::capture_activations(m, batch, quant::QuantMode::float32);
  const quant::Capture w = quant::capture_activations(m, batch, quant::QuantMode::weights_only);
  const quant::Capture q = quant::capture_activations(m, batch, quant::QuantMode::fake_quant);
  CHECK(switches(m) == before);
  for (auto& [name, mod] : m.named_modules()) CHECK_MESSAGE(mod->type() != "Recorder", name);
  {
    NoGradGuard g;
    CHECK(same_bits(m.forward(batch), reference));
  }
  CHECK(same_bits(q.logits, reference));
  CHECK(!same_bits(f.logits, q.logits));  // the quantizers do something
  CHECK(!same_bits(f.logits, w.logits));

  for (const quant::Capture* c : {&f, &w, &q}) {
    CHECK(c->in.size() == n_act);
    CHECK(c->out.size() == n_act);
  }
  int checked = 0;
  for (auto& [name, aq] : quant::act_quants(m)) {
    CAPTURE(name);
    REQUIRE(f.out.count(name) == 1);
    // Quantizers off: the ActQuant passes its input through.
    CHECK(same_bits(f.in.at(name), f.out.at(name)));
    CHECK(same_bits(w.in.at(name), w.out.at(name)));
    // Fake quant: the output is the input rounded onto the grid, clamped to its range.
    const quant::QuantParams g = aq->params();
    const Tensor& x = q.in.at(name);
    const Tensor& y = q.out.at(name);
    REQUIRE(x.numel() == y.numel());
    int64_t off_grid = 0, wrong_code = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double v = double(x.data()[i]) / g.scale;
      const double code = std::clamp<double>(std::nearbyint(v) + double(g.zero_point), double(g.qmin), double(g.qmax));
      const double got = double(y.data()[i]) / g.scale + double(g.zero_point);
      if (std::fabs(got - std::nearbyint(got)) > 1e-3) ++off_grid;
      const bool tie = std::fabs(std::fabs(v - std::trunc(v)) - 0.5) < 1e-3;  // either rounding is fine
      if (!tie && std::nearbyint(got) != code) ++wrong_code;
    }
    CHECK(off_grid == 0);
    CHECK(wrong_code == 0);
    ++checked;
  }
  CHECK(checked == static_cast<int>(n_act));
}

TEST_CASE("analysis: compare_layers' figures are the ones recomputed from the captures and the integer traces") {
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 5);
  nn::ResNet& m = *p.model;
  const Exported e = exported(p);
  const engine::ModelDesc& d = e.result.builder.desc();
  constexpr int n = 40;  // two chunks of compare_layers (32 + 8)
  const Images im = images(n, 77, p.pre);
  const quant::Comparison c =
      quant::compare_layers(m, e.sim, e.result.tensor_of_actquant, e.op_of, im.x, im.nhwc.data());
  CHECK(c.images == n);

  // The same sums, here in long double, chunk by chunk as compare_layers feeds
  // the model (so the float forwards see the same batches).
  struct Sums {
    long double f2 = 0, w = 0, q = 0, i = 0, iq = 0, local = 0, clip = 0;
    int64_t values = 0;
  };
  std::map<std::string, Sums> sums;
  std::map<std::string, const quant::ActQuant*> aq_of;
  for (auto& [name, aq] : quant::act_quants(m)) aq_of[name] = aq;
  int agree_float_fq = 0, agree_fq_int = 0, agree_float_int = 0;
  const size_t per = 3 * kImage * kImage;
  const auto argmax = [](const auto* v, int k) { return int(std::max_element(v, v + k) - v); };
  for (int start = 0; start < n; start += 32) {
    const int k = std::min(32, n - start);
    const Tensor chunk = preprocess_batch(im.chw, start, k, p.pre);
    const quant::Capture F = quant::capture_activations(m, chunk, quant::QuantMode::float32);
    const quant::Capture W = quant::capture_activations(m, chunk, quant::QuantMode::weights_only);
    const quant::Capture Q = quant::capture_activations(m, chunk, quant::QuantMode::fake_quant);
    std::vector<quant::IntSim::Trace> traces;
    for (int j = 0; j < k; ++j) traces.push_back(e.sim.run_image(im.nhwc.data() + (start + j) * per));
    for (int j = 0; j < k; ++j) {
      const int af = argmax(F.logits.data() + j * 10, 10), aq = argmax(Q.logits.data() + j * 10, 10);
      const std::vector<int8_t>& li = traces[size_t(j)].values[d.output];
      const int ai = argmax(li.data(), 10);
      agree_float_fq += af == aq;
      agree_fq_int += aq == ai;
      agree_float_int += af == ai;
    }
    for (const auto& [name, tid] : e.result.tensor_of_actquant) {
      if (!F.out.count(name)) continue;
      const Tensor &fv = F.out.at(name), &wv = W.out.at(name), &qv = Q.out.at(name), &xv = Q.in.at(name);
      const int64_t vals = fv.numel() / k;
      REQUIRE(int64_t(traces[0].values[tid].size()) == vals);  // every exported tensor matches its ActQuant
      const engine::TensorDesc& t = d.tensors[tid];
      const int32_t carried_zp = t.dtype == engine::DType::uint8 ? t.zero_point - 128 : t.zero_point;
      const quant::QuantParams g = aq_of.at(name)->params();
      Sums& s = sums[name];
      s.values = vals;
      for (int j = 0; j < k; ++j)
        for (int64_t v = 0; v < vals; ++v) {
          const size_t at = size_t(j * vals + v);
          const int8_t code = traces[size_t(j)].values[tid][size_t(v)];
          const long double iv = (long double)t.scale * (code - carried_zp);  // the integer value, dequantized
          const long double f = fv.data()[at], wq = wv.data()[at], fq = qv.data()[at], x = xv.data()[at];
          s.f2 += f * f;
          s.w += (wq - f) * (wq - f);
          s.q += (fq - f) * (fq - f);
          s.i += (iv - f) * (iv - f);
          s.iq += (iv - fq) * (iv - fq);
          s.local += (fq - x) * (fq - x);
          if (x < g.real_min() || x > g.real_max()) s.clip += (fq - x) * (fq - x);
        }
    }
  }
  CHECK(c.argmax_float_fq == agree_float_fq);
  CHECK(c.argmax_fq_int == agree_fq_int);
  CHECK(c.argmax_float_int == agree_float_int);

  // One row per exported tensor, in engine order, named by ActQuant and op.
  REQUIRE(c.layers.size() == sums.size());
  REQUIRE(c.layers.size() == e.result.tensor_of_actquant.size());
  for (size_t r = 1; r < c.layers.size(); ++r) CHECK(c.layers[r - 1].tensor < c.layers[r].tensor);
  for (const quant::LayerError& L : c.layers) {
    CAPTURE(L.name);
    REQUIRE(sums.count(L.name) == 1);
    const Sums& s = sums.at(L.name);
    CHECK(L.tensor == e.result.tensor_of_actquant.at(L.name));
    CHECK(L.op == e.op_of.at(L.name));
    CHECK(L.values == s.values);
    const long double cnt = (long double)s.values * n;
    const auto sqnr = [&](long double noise) {
      return noise == 0 ? kInf : double(10 * std::log10(s.f2 / noise));
    };
    check_figure("float_rms", L.float_rms, double(std::sqrt(s.f2 / cnt)));
    check_figure("rmse_weights", L.rmse_weights, double(std::sqrt(s.w / cnt)));
    check_figure("rmse_fakequant", L.rmse_fakequant, double(std::sqrt(s.q / cnt)));
    check_figure("rmse_integer", L.rmse_integer, double(std::sqrt(s.i / cnt)));
    check_figure("rmse_int_vs_fq", L.rmse_int_vs_fq, double(std::sqrt(s.iq / cnt)));
    check_figure("sqnr_weights", L.sqnr_weights, sqnr(s.w));
    check_figure("sqnr_fakequant", L.sqnr_fakequant, sqnr(s.q));
    check_figure("sqnr_integer", L.sqnr_integer, sqnr(s.i));
    const double clip = s.local > 0 ? double(s.clip / s.local) : 0.0;
    check_figure("clip_fraction", L.clip_fraction, clip);
    // The shares (quant/analysis.cpp): weight E(w - f); the activation
    // quantizers' addition max(0, E(fq - f) - E(w - f)) split by the clip
    // fraction; integer E(int - fq); each over their sum.
    const long double act = std::max<long double>(0, s.q - s.w);
    const long double total = s.w + act + s.iq;
    REQUIRE(total > 0);
    check_figure("share_weight", L.share_weight, double(s.w / total));
    check_figure("share_clip", L.share_clip, double(act * clip / total));
    check_figure("share_round", L.share_round, double(act * (1 - clip) / total));
    check_figure("share_integer", L.share_integer, double(s.iq / total));
    CHECK(L.share_weight + L.share_clip + L.share_round + L.share_integer == doctest::Approx(1.0).epsilon(1e-12));
    // Not vacuous: a quantized network differs from the float one everywhere.
    CHECK(L.float_rms > 0);
    CHECK(L.rmse_fakequant > 0);
    CHECK(std::isfinite(L.sqnr_fakequant));
  }

  // The table: a row per tensor with its op, and the argmax line.
  const std::string table = quant::format_comparison(c);
  CHECK(table.find("SQNR fq") != std::string::npos);
  for (const quant::LayerError& L : c.layers) {
    CAPTURE(L.name);
    CHECK(table.find("\n" + L.name + " ") != std::string::npos);
    CHECK(table.find(" " + L.op + " ") != std::string::npos);
  }
  CHECK(table.find("argmax agreement over 40 images: float vs fakequant " + std::to_string(agree_float_fq) +
                   ", fakequant vs integer " + std::to_string(agree_fq_int) + ", float vs integer " +
                   std::to_string(agree_float_int)) != std::string::npos);
}

TEST_CASE("analysis: hand-made tensors whose figures are known (zero signal, identical versions, hand-placed logits)") {
  // The last block is driven to zero: its second conv and its projection
  // shortcut get a BN beta of -500, so the add (and its ReLU) is negative
  // everywhere, in every version (float, weights, fakequant: both inputs
  // clipped to the bottom of their grids; integer: the add clamps at its zero
  // point). Then the average pool is 0, and the logits are exactly the fc
  // bias, which is placed on the logit grid by hand.
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 6);
  nn::ResNet& m = *p.model;
  dynamic_cast<quant::ConvBn&>(m.find("layer3.0.conv2")).bn().bias().fill_(-500.0f);
  dynamic_cast<quant::ConvBn&>(m.find("layer3.0.shortcut.0")).bn().bias().fill_(-500.0f);
  const quant::QuantParams g = act_quant(m, "fc.1").params();
  REQUIRE(g.zero_point == 0);  // QDQv2: symmetric
  REQUIRE(g.qmax >= 127);
  REQUIRE(g.qmin <= -127);
  // The bias of each class in logit steps: off the grid by 0.1 .. 0.45 of a
  // step (no ties), two of them outside the grid's range (clipped).
  const double qmin = double(g.qmin), qmax = double(g.qmax);
  const double steps[10] = {10.3, -20.25, 50.4, -3.1, 0.2, 100.35, -60.45, 7.1, qmax + 2.5, qmin - 1.5};
  const bool clipped[10] = {false, false, false, false, false, false, false, false, true, true};
  nn::Linear& fc = dynamic_cast<nn::Linear&>(m.find("fc.0"));
  Tensor bias = fc.bias();
  REQUIRE(bias.defined());
  double sum_b2 = 0, sum_e2 = 0, sum_clip_e2 = 0;
  std::vector<int> codes(10);
  for (int k = 0; k < 10; ++k) {
    const float b = static_cast<float>(steps[k] * g.scale);
    bias.data()[k] = b;
    codes[size_t(k)] = static_cast<int>(std::clamp(std::nearbyint(steps[k]), qmin, qmax));
    const float fq = static_cast<float>(codes[size_t(k)]) * g.scale;
    const double e2 = (double(fq) - double(b)) * (double(fq) - double(b));
    sum_b2 += double(b) * double(b);
    sum_e2 += e2;
    if (clipped[k]) sum_clip_e2 += e2;
  }

  const Exported e = exported(p);
  constexpr int n = 8;
  const Images im = images(n, 41, p.pre);
  // The integer model's logits are the hand-placed codes, for every image.
  const std::vector<int8_t> logits = e.sim.run(im.nhwc.data(), n);
  int wrong = 0;
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < 10; ++k) wrong += logits[size_t(i * 10 + k)] != codes[size_t(k)];
  CHECK(wrong == 0);

  const quant::Comparison c = quant::compare_layers(m, e.sim, e.result.tensor_of_actquant, e.op_of, im.x, im.nhwc.data());
  MESSAGE(quant::format_comparison(c));

  SUBCASE("zero signal, four identical versions: RMSE 0, SQNR +inf, no error to share") {
    for (const std::string name : {"layer3.0.relu2.1", "avgpool.1"}) {
      CAPTURE(name);
      const quant::LayerError& L = layer_named(c, name);
      CHECK(L.values == (name == "avgpool.1" ? 32 : 32 * 8 * 8));
      CHECK(L.float_rms == 0);
      CHECK(L.rmse_weights == 0);
      CHECK(L.rmse_fakequant == 0);
      CHECK(L.rmse_integer == 0);
      CHECK(L.rmse_int_vs_fq == 0);
      CHECK(L.sqnr_weights == kInf);
      CHECK(L.sqnr_fakequant == kInf);
      CHECK(L.sqnr_integer == kInf);
      CHECK(L.clip_fraction == 0);
      CHECK(L.share_weight == 0);
      CHECK(L.share_clip == 0);
      CHECK(L.share_round == 0);
      CHECK(L.share_integer == 0);
    }
  }
  SUBCASE("a conv output below its grid everywhere: all of its activation error is clipping") {
    const quant::LayerError& L = layer_named(c, "layer3.0.bn2.1");
    CHECK(L.clip_fraction == 1.0);
    CHECK(L.share_round == 0);
    CHECK(L.share_clip > 0.5);
    CHECK(L.share_weight + L.share_clip + L.share_round + L.share_integer == doctest::Approx(1.0).epsilon(1e-12));
  }
  SUBCASE("logits = the hand-placed fc bias: every figure from the ten numbers above") {
    const quant::LayerError& L = layer_named(c, "fc.1");
    CHECK(L.op == "fc.0");
    CHECK(L.values == 10);
    // float == weights == bias; fakequant == integer == the codes on the grid.
    check_figure("float_rms", L.float_rms, std::sqrt(sum_b2 / 10), 1e-6);
    CHECK(L.rmse_weights == 0);
    CHECK(L.sqnr_weights == kInf);
    check_figure("rmse_fakequant", L.rmse_fakequant, std::sqrt(sum_e2 / 10), 1e-6);
    check_figure("rmse_integer", L.rmse_integer, std::sqrt(sum_e2 / 10), 1e-6);
    // Equal codes; what is left is float32 (fake-quant) against double (integer) dequantization.
    CHECK(L.rmse_int_vs_fq < 1e-6 * L.float_rms);
    check_figure("sqnr_fakequant", L.sqnr_fakequant, 10 * std::log10(sum_b2 / sum_e2), 1e-6);
    check_figure("sqnr_integer", L.sqnr_integer, 10 * std::log10(sum_b2 / sum_e2), 1e-6);
    check_figure("clip_fraction", L.clip_fraction, sum_clip_e2 / sum_e2, 1e-6);
    CHECK(L.share_weight == 0);
    CHECK(L.share_integer < 1e-9);
    check_figure("share_clip", L.share_clip, sum_clip_e2 / sum_e2, 1e-6);
    check_figure("share_round", L.share_round, 1 - sum_clip_e2 / sum_e2, 1e-6);
    // The numbers themselves, in steps: errors 0.3, 0.25, 0.4, 0.1, 0.2, 0.35, 0.45, 0.1 (rounding), 2.5 and 1.5 (clipped).
    const double round_e2 = 0.09 + 0.0625 + 0.16 + 0.01 + 0.04 + 0.1225 + 0.2025 + 0.01, clip_e2 = 6.25 + 2.25;
    check_figure("clip_fraction (steps)", L.clip_fraction, clip_e2 / (round_e2 + clip_e2), 1e-4);
    check_figure("rmse_fakequant (steps)", L.rmse_fakequant / g.scale, std::sqrt((round_e2 + clip_e2) / 10), 1e-4);
    // Every image has the same logits, whose largest is class 8 in every version.
    CHECK(c.argmax_float_fq == n);
    CHECK(c.argmax_fq_int == n);
    CHECK(c.argmax_float_int == n);
  }
}

TEST_CASE("analysis: a tensor that is zero in float but not once quantized has SQNR -inf") {
  // The last block's add: the float conv output is about -600 and the float
  // shortcut about +300 (BN betas), so the float sum is negative and its ReLU
  // 0 everywhere (in the weights-only version too). Quantized, the conv output
  // clips at the bottom of a [-1, 1] grid and the shortcut at the top of a
  // [-4, 4] grid: the sum is about +3 and the ReLU passes it.
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 7);
  nn::ResNet& m = *p.model;
  dynamic_cast<quant::ConvBn&>(m.find("layer3.0.conv2")).bn().bias().fill_(-600.0f);
  dynamic_cast<quant::ConvBn&>(m.find("layer3.0.shortcut.0")).bn().bias().fill_(300.0f);
  act_quant(m, "layer3.0.bn2.1").set_range({-1.0f, 1.0f});
  act_quant(m, "layer3.0.shortcut.1.1").set_range({-4.0f, 4.0f});
  const Exported e = exported(p);
  constexpr int n = 4;
  const Images im = images(n, 43, p.pre);
  const quant::Comparison c = quant::compare_layers(m, e.sim, e.result.tensor_of_actquant, e.op_of, im.x, im.nhwc.data());
  const quant::LayerError& L = layer_named(c, "layer3.0.relu2.1");
  CHECK(L.float_rms == 0);
  CHECK(L.rmse_weights == 0);
  CHECK(L.sqnr_weights == kInf);  // no error: +inf, even without signal
  CHECK(L.rmse_fakequant > 0);
  CHECK(L.rmse_integer > 0);
  CHECK(L.sqnr_fakequant == -kInf);
  CHECK(L.sqnr_integer == -kInf);
  CHECK(L.share_weight == 0);
  CHECK(L.share_clip + L.share_round + L.share_integer == doctest::Approx(1.0).epsilon(1e-12));
}

TEST_CASE("analysis: compare_layers refuses images of another size than the model's input") {
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 8);
  const Exported e = exported(p);
  const Tensor small = Tensor::zeros({2, 3, 16, 16});
  const std::vector<uint8_t> px(2 * 16 * 16 * 3, 128);
  CHECK_THROWS_AS(quant::compare_layers(*p.model, e.sim, e.result.tensor_of_actquant, e.op_of, small, px.data()),
                  std::invalid_argument);
}

TEST_CASE("double_rounding_share: gemmlowp's two roundings against one, half to even") {
  // M = 1 (M0 = 2^30, shift 1): the accumulator comes back unchanged, nothing to round.
  CHECK(quant::double_rounding_share(1 << 30, 1) == 0.0);
  // The golden case of docs/quantization.md section 15: two roundings give 89420, one 89419.
  CHECK(engine::MultiplyByQuantizedMultiplier(295987, 1297534316, -1) == 89420);
  // The first rounding keeps e = -shift bits below the output step, so the two
  // can only disagree within 2^-(e+1) of a half step: a share that halves
  // with every further bit of shift, and is never zero.
  double previous = 1.0;
  for (int e = 2; e <= 10; ++e) {
    CAPTURE(e);
    const double share = quant::double_rounding_share(1297534316, -e);
    CHECK(share > 0);
    CHECK(share <= std::ldexp(1.0, -e));
    CHECK(share < previous);
    previous = share;
  }
  CHECK_THROWS_AS(quant::double_rounding_share(0, 0), std::invalid_argument);
}
