// The exporter: a small prepared ResNet (random weights, random BN statistics,
// PTQ-calibrated) -> engine model, then
//   - the engine's int8 logits equal the integer simulation's, image for image;
//   - the engine's dequantized logits are close to the fake-quant model's;
//   - the weight codes are exactly the fake-quant model's codes;
//   - models the engine cannot run are refused with an error naming the layer:
//     every refusal a prepared model can reach (the int32 accumulator headroom
//     at its boundary, asymmetric or wide weights, a bias outside int32 or not
//     finite, wide or unsigned logits, an uncalibrated grid, a pool whose grid
//     differs from its input's, a bad preprocessing, wrong class names, a
//     float checkpoint);
//   - the size targets of a real ResNet-20: the file is at most 0.27x the float
//     weights at 8 bits, 0.15x at 4 bits.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/augment.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "engine/engine.h"
#include "nn/resnet.h"
#include "quant/export.h"
#include "quant/intsim.h"
#include "quant/qat.h"
#include "tests/quant/tiny_resnet.h"

using namespace octet;
using namespace octet::testing;

namespace {

struct Agreement {
  int images = 0;
  int exact = 0;             // engine logits == intsim logits
  int argmax_same = 0;       // engine argmax == fake-quant argmax
  double max_steps = 0;      // max |engine - fake-quant| in logit steps
  double mean_steps = 0;     // mean |engine - fake-quant| in logit steps
  double logit_rms_steps = 0;  // RMS of the fake-quant logits, in steps (for scale)
};

Agreement check_export(Prepared& p, int images, uint64_t seed) {
  quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
  const auto model = engine::Model::from_bytes(r.builder.serialize(), "export");
  engine::Session session(model, images);
  const quant::IntSim sim(r.builder.desc());
  const std::vector<uint8_t> chw = random_images(images, seed);
  const std::vector<uint8_t> nhwc = to_nhwc(chw, images);
  const std::span<const int8_t> eng = session.run(nhwc.data(), images);
  const std::vector<int8_t> ints = sim.run(nhwc.data(), images);

  p.model->eval();
  Tensor fq;
  {
    NoGradGuard g;
    fq = p.model->forward(preprocess_batch(chw, 0, images, p.pre));
  }
  const engine::TensorDesc& out = model->desc().tensors[model->desc().output];
  Agreement a;
  a.images = images;
  double sum = 0, sq = 0;
  for (int i = 0; i < images; ++i) {
    bool same = true;
    int am_e = 0, am_f = 0;
    for (int c = 0; c < 10; ++c) {
      const size_t k = static_cast<size_t>(i * 10 + c);
      same = same && eng[k] == ints[k];
      const double e = out.scale * (eng[k] - out.zero_point);
      const double f = fq.data()[k];
      const double d = std::fabs(e - f) / out.scale;
      a.max_steps = std::max(a.max_steps, d);
      sum += d;
      sq += (f / out.scale) * (f / out.scale);
      if (eng[k] > eng[static_cast<size_t>(i * 10 + am_e)]) am_e = c;
      if (fq.data()[k] > fq.data()[static_cast<size_t>(i * 10 + am_f)]) am_f = c;
    }
    a.exact += same ? 1 : 0;
    a.argmax_same += am_e == am_f ? 1 : 0;
  }
  a.mean_steps = sum / (images * 10);
  a.logit_rms_steps = std::sqrt(sq / (images * 10));
  return a;
}

// Random weights (resnet20 etc.) calibrated on a few random batches, as calibrated() does for the tiny ResNet.
Prepared calibrated_model(std::shared_ptr<nn::ResNet> m, const quant::QatConfig& cfg, PreprocessMode mode, uint64_t seed) {
  Prepared p{std::move(m), cfg, Preprocess::make(mode)};
  const std::vector<uint8_t> calib = random_images(64, seed + 100);
  std::vector<Tensor> batches;
  for (int b = 0; b < 64; b += 32) batches.push_back(preprocess_batch(calib, b, 32, p.pre));
  quant::calibrate(*p.model, cfg, batches);
  return p;
}

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const engine::OpDesc& op_named(const engine::ModelDesc& d, const std::string& name) {
  for (const auto& o : d.ops)
    if (o.name == name) return o;
  FAIL("no engine op named '" << name << "'");
  throw std::logic_error("unreachable");
}

quant::LayerHeadroom headroom_of(const quant::ExportResult& r, const std::string& name) {
  for (const auto& h : r.headroom)
    if (h.name == name) return h;
  FAIL("no headroom entry for '" << name << "'");
  throw std::logic_error("unreachable");
}

// What export_model's ExportError says; a failed check (and "") when it throws none.
std::string export_refusal(nn::ResNet& m, const quant::QatConfig& cfg, const Preprocess& pre,
                           const quant::ExportOptions& opt = {}) {
  try {
    (void)quant::export_model(m, cfg, pre, opt);
  } catch (const quant::ExportError& e) {
    return e.what();
  }
  FAIL_CHECK("export_model exported a model it should refuse");
  return "";
}

}  // namespace

TEST_CASE("export: engine == intsim exactly, and close to the fake-quant model, for each preprocessing") {
  for (PreprocessMode mode : {PreprocessMode::inception, PreprocessMode::standard, PreprocessMode::vgg}) {
    const std::string mode_name = preprocess_name(mode);
    CAPTURE(mode_name);
    Prepared p = calibrated(quant::QatConfig{}, mode, 7);
    const Agreement a = check_export(p, 64, 1234);
    MESSAGE(mode_name, ": exact ", a.exact, "/", a.images, ", argmax agreement ", a.argmax_same,
            ", |engine - fakequant| mean ", a.mean_steps, " max ", a.max_steps, " steps (logit RMS ",
            a.logit_rms_steps, " steps)");
    // The contract: bit for bit.
    CHECK(a.exact == a.images);
    // Close to the fake-quant model: the remaining differences are the
    // engine's integer rounding (double rounding of the requantization,
    // TFLite's add rescale, ties of the average pool) and, for standard/vgg,
    // the border padding of the stem (export.h). Stated tolerance: mean
    // difference below 1.5 logit steps, none above 8 steps, and the logits
    // vary over at least 8 steps (so the comparison is not vacuous).
    CHECK(a.mean_steps < 1.5);
    CHECK(a.max_steps <= 8);
    CHECK(a.logit_rms_steps > 8);
    CHECK(a.argmax_same >= a.images * 85 / 100);
  }
}

TEST_CASE("export: other grids (4 bits, unsigned activations, the FakeQuant op, per-tensor weights)") {
  struct Variant {
    std::string name;
    quant::QatConfig cfg;
  };
  std::vector<Variant> variants;
  {
    quant::QatConfig c;
    c.weight_bits = 4;
    c.act_bits = 4;
    variants.push_back({"w4a4", c});
  }
  {
    quant::QatConfig c;
    c.signed_activations = false;
    variants.push_back({"unsigned", c});
  }
  {
    quant::QatConfig c;
    c.op = quant::QuantOp::fake_quant;
    c.round = quant::RoundMode::half_up;
    variants.push_back({"fake_quant", c});
  }
  {
    quant::QatConfig c;
    c.per_channel_weights = false;
    c.weight_bits = 6;
    variants.push_back({"per_tensor_w6", c});
  }
  for (Variant& v : variants) {
    CAPTURE(v.name);
    Prepared p = calibrated(v.cfg, PreprocessMode::inception, 21);
    const Agreement a = check_export(p, 48, 99);
    MESSAGE(v.name, ": exact ", a.exact, "/", a.images, ", argmax agreement ", a.argmax_same, ", mean ", a.mean_steps,
            " max ", a.max_steps, " steps (logit RMS ", a.logit_rms_steps, ")");
    CHECK(a.exact == a.images);
    CHECK(a.mean_steps < 1.5);
    CHECK(a.max_steps <= 8);
    CHECK(a.logit_rms_steps > 1.5);
  }
}

TEST_CASE("export: Add-input quantizers (tied, untied) are requantizations in the engine, not dropped") {
  for (quant::AddInputs mode : {quant::AddInputs::untied, quant::AddInputs::tied}) {
    const std::string mode_name(quant::add_inputs_name(mode));
    CAPTURE(mode_name);
    quant::QatConfig cfg;
    cfg.add_inputs = mode;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 31);
    const quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
    const engine::ModelDesc& d = r.builder.desc();
    int slots = 0;
    for (const auto& [name, aq] : quant::act_quants(*p.model)) {
      if (name.find(".add.input_") == std::string::npos) continue;
      ++slots;
      // A depthwise 1x1 conv with unit weights onto the slot's own grid.
      const engine::OpDesc& op = op_named(d, name);
      CHECK(op.type == engine::OpType::conv2d);
      const engine::TensorDesc& w = d.tensors[op.inputs[1]];
      const engine::TensorDesc& y = d.tensors[op.output];
      CHECK(op.params[engine::param::kGroups] == y.shape.back());
      CHECK(std::all_of(w.i8.begin(), w.i8.end(), [](int8_t v) { return v == 1; }));
      const quant::QuantParams g = aq->params();
      CHECK(y.scale == doctest::Approx(g.scale).epsilon(1e-6));
      CHECK(y.zero_point == g.zero_point);  // both in the grid's own type (uint8: 0..255)
      // The add reads it.
      const engine::OpDesc& add = op_named(d, name.substr(0, name.find(".input_")));
      CHECK(std::find(add.inputs.begin(), add.inputs.end(), op.output) != add.inputs.end());
    }
    CHECK(slots == 6);  // two per block of the ResNet-8
    const Agreement a = check_export(p, 48, 77);
    MESSAGE(mode_name, ": exact ", a.exact, "/", a.images, ", mean ", a.mean_steps, " max ", a.max_steps, " steps");
    CHECK(a.exact == a.images);
    CHECK(a.mean_steps < 1.5);
    CHECK(a.max_steps <= 8);
  }
}

TEST_CASE("export: the weight codes are the fake-quant model's, and the sizes") {
  for (int bits : {8, 4}) {
    CAPTURE(bits);
    quant::QatConfig cfg;
    cfg.weight_bits = bits;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 3);
    quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
    const engine::ModelDesc& d = r.builder.desc();
    int checked = 0;
    for (auto& [name, cb] : quant::conv_bns(*p.model)) {
      // the engine op of this ConvBn
      const engine::OpDesc* op = nullptr;
      for (const auto& o : d.ops)
        if (o.name == name) op = &o;
      REQUIRE(op != nullptr);
      const engine::TensorDesc& w = d.tensors[op->inputs[1]];
      CHECK(w.bits == bits);
      const std::vector<quant::QuantParams> wp = cb->weight_params();
      cb->weight_quant().set_fake_quant(true);
      Tensor y;
      {
        NoGradGuard g;
        y = cb->weight_quant().forward(cb->folded_weight());
      }
      const int O = cb->out_channels, I = cb->in_channels, K = cb->kernel;
      int mismatch = 0;
      for (int o = 0; o < O; ++o)
        for (int i = 0; i < I; ++i)
          for (int kh = 0; kh < K; ++kh)
            for (int kw = 0; kw < K; ++kw) {
              const float fqv = y.data()[((static_cast<size_t>(o) * I + i) * K + kh) * K + kw];
              const int8_t code = w.i8[((static_cast<size_t>(o) * K + kh) * K + kw) * I + i];
              // exactly on the grid: code * scale reproduces the fake-quant weight bit for bit
              if (static_cast<float>(code) * wp[static_cast<size_t>(o)].scale != fqv) ++mismatch;
              if (std::abs(code) > (1 << (bits - 1)) - 1) ++mismatch;
            }
      CHECK(mismatch == 0);
      ++checked;
    }
    CHECK(checked == 9);  // stem + 2 per block + 2 projection shortcuts
    MESSAGE(bits, "-bit weights: file ", r.file_bytes, " bytes, packed weights ", r.weight_bytes, ", float ",
            r.float_weight_bytes);
    CHECK(r.file_bytes < r.float_weight_bytes);
    CHECK(!r.headroom.empty());
    for (const auto& h : r.headroom) CHECK(h.bound <= 2147483647);
    // Packed storage: ceil(count * bits / 8) bytes per weight tensor.
    uint64_t packed = 0;
    for (const auto& o : d.ops)
      if (o.type == engine::OpType::conv2d || o.type == engine::OpType::fully_connected)
        packed += (static_cast<uint64_t>(d.tensors[o.inputs[1]].numel()) * bits + 7) / 8;
    CHECK(r.weight_bytes == packed);
  }
}

TEST_CASE("export: the stem fold pads with the pixel nearest to real 0") {
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 5);
  const quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
  // inception: x = pixel / 127.5 - 1 maps 127.5 to 0; z = 127 or 128, |e| = 0.5 / 127.5.
  CHECK((r.input_zero_point == 127 || r.input_zero_point == 128));
  for (double e : r.padding_value) CHECK(std::fabs(e) == doctest::Approx(0.5 / 127.5).epsilon(1e-5));
  CHECK(!r.stem_requantized);
  const quant::ExportResult s = quant::export_model(*calibrated(quant::QatConfig{}, PreprocessMode::standard, 5).model,
                                                    p.cfg, Preprocess::standard());
  CHECK(s.stem_requantized);  // per-channel std: the stem's codes change
}

TEST_CASE("export refuses what the engine cannot run, naming the layer") {
  SUBCASE("16-bit weights") {
    quant::QatConfig cfg;
    cfg.weight_bits = 16;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 9);
    CHECK_THROWS_WITH_AS(quant::export_model(*p.model, p.cfg, p.pre),
                         doctest::Contains("layer 'conv1': 16-bit weights"), quant::ExportError);
  }
  SUBCASE("16-bit activations") {
    quant::QatConfig cfg;
    cfg.act_bits = 16;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 9);
    CHECK_THROWS_WITH_AS(quant::export_model(*p.model, p.cfg, p.pre), doctest::Contains("do not fit 8 bits"),
                         quant::ExportError);
  }
  SUBCASE("a bias outside int32") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    // A channel whose folded weights are almost zero but whose bias is not.
    auto& bn = dynamic_cast<quant::ConvBn&>(p.model->find("layer2.0.conv1")).bn();
    bn.weight().data()[3] = 1e-9f;
    bn.bias().data()[3] = 5.0f;
    CHECK_THROWS_WITH_AS(quant::export_model(*p.model, p.cfg, p.pre),
                         doctest::Contains("layer 'layer2.0.conv1': bias of channel 3"), quant::ExportError);
  }
  SUBCASE("an unprepared model") {
    auto m = tiny_resnet(1);
    CHECK_THROWS_AS(quant::export_model(*m, quant::QatConfig{}, Preprocess::inception()), std::logic_error);
  }
}

TEST_CASE("export refuses a conv whose int32 accumulator can overflow though its bias fits, and exports just under") {
  // One channel of layer3.0.conv2 gets a folded bias (through its BN beta)
  // whose int32 code sits just below, then just above, 2^31 - 1 minus the
  // products' share of the bound, K * max|w[c]| * max|x - zp|: the bias fits
  // int32 both times, the accumulator bound fits only the first time.
  const std::string layer = "layer3.0.conv2";
  const int ch = 5;
  constexpr int64_t kMargin = int64_t{1} << 16;  // bias codes on either side of the limit
  Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 13);
  auto& cb = dynamic_cast<quant::ConvBn&>(p.model->find(layer));

  // The proof's numbers for this channel, from an export of the model as
  // calibrated: none of them depends on the BN beta, the only thing changed below.
  const quant::ExportResult r0 = quant::export_model(*p.model, p.cfg, p.pre);
  const engine::ModelDesc& d0 = r0.builder.desc();
  const engine::OpDesc& op0 = op_named(d0, layer);
  const engine::TensorDesc& x0 = d0.tensors[op0.inputs[0]];
  const engine::TensorDesc& w0 = d0.tensors[op0.inputs[1]];
  const quant::LayerHeadroom h0 = headroom_of(r0, layer);
  REQUIRE(h0.k == 9 * cb.in_channels);
  int64_t max_w = 0;
  for (int64_t i = 0; i < h0.k; ++i) max_w = std::max<int64_t>(max_w, std::abs(int(w0.i8[size_t(ch * h0.k + i)])));
  const int64_t products = h0.k * max_w * h0.max_x;
  REQUIRE(products > 16 * kMargin);  // so a bias code past the limit by kMargin still fits int32 by far
  // bias_q = round(b_fold / (s_in * s_w[ch])) (quant/export.h).
  const double step = x0.scale * double(cb.weight_params()[size_t(ch)].scale);
  const float beta0 = cb.bn().bias().data()[ch];
  const double fold0 = cb.folded_bias().data()[ch];
  const auto set_bias_code = [&](int64_t code) {
    cb.bn().bias().data()[ch] = static_cast<float>(double(beta0) + (double(code) * step - fold0));
  };
  const auto bias_code = [&](const quant::ExportResult& r) {
    return int64_t{r.builder.desc().tensors[op_named(r.builder.desc(), layer).inputs[2]].i32.at(size_t(ch))};
  };

  SUBCASE("just under the limit: exports, and the engine's reader accepts the file") {
    const int64_t target = kInt32Max - products - kMargin;
    set_bias_code(target);
    const quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
    const int64_t code = bias_code(r);
    CHECK(std::llabs(code - target) < 4096);  // the float beta sets the code to a few hundred steps
    const quant::LayerHeadroom h = headroom_of(r, layer);
    MESSAGE(layer, " channel ", ch, ": K ", h.k, ", max|w| ", max_w, ", max|x - zp| ", h.max_x, ", bias code ", code,
            ": bound ", h.bound, " = 2^31 - 1 - ", kInt32Max - h.bound, " (", h.spare_bits(), " spare bits)");
    CHECK(h.bound == products + std::llabs(code));  // this channel is the layer's tightest
    CHECK(h.bound <= kInt32Max);
    CHECK(h.bound > kInt32Max - 2 * kMargin);  // at the boundary, not comfortably inside it
    CHECK_NOTHROW(engine::Model::from_bytes(r.builder.serialize(), "headroom-boundary"));
  }
  SUBCASE("just over the limit: refused as the accumulator's headroom, naming the layer") {
    const int64_t target = kInt32Max - products + kMargin;
    REQUIRE(target + 4096 < kInt32Max);  // the bias code itself fits int32
    set_bias_code(target);
    const std::string why = export_refusal(*p.model, p.cfg, p.pre);
    INFO(why);
    CHECK(has(why, "layer '" + layer + "'"));
    CHECK(has(why, "accumulator headroom"));
    CHECK(has(why, "> 2^31 - 1"));
    CHECK(has(why, std::to_string(h0.k) + " * "));
    CHECK(!has(why, "bias of channel"));  // not the bias refusal: the bias fits
  }
}

TEST_CASE("export refuses, naming the layer: the refusals a prepared model can reach") {
  SUBCASE("asymmetric weights (a channel whose folded weights are all >= 0 gets a zero point off 0)") {
    quant::QatConfig cfg;
    cfg.op = quant::QuantOp::fake_quant;
    cfg.symmetric_weights = false;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 9);
    auto& stem = dynamic_cast<quant::ConvBn&>(p.model->find("conv1"));
    const int64_t per = stem.weight().numel() / stem.out_channels;
    for (int64_t i = 0; i < per; ++i) stem.weight().data()[i] = std::fabs(stem.weight().data()[i]);
    REQUIRE(stem.weight_params()[0].zero_point != 0);
    const std::string why = export_refusal(*p.model, p.cfg, p.pre);
    INFO(why);
    CHECK(has(why, "layer 'conv1': channel 0 weight zero point is "));
    CHECK(has(why, "symmetric"));
  }
  SUBCASE("a bias that is not finite") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    dynamic_cast<quant::ConvBn&>(p.model->find("layer2.0.conv1")).bn().bias().data()[2] =
        std::numeric_limits<float>::quiet_NaN();
    CHECK(has(export_refusal(*p.model, p.cfg, p.pre), "layer 'layer2.0.conv1': bias of channel 2 is not finite"));
  }
  SUBCASE("a weight that is not finite (weights not fake-quantized, so no quantizer rejects it first)") {
    quant::QatConfig cfg;
    cfg.quantize_weights = false;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 9);
    auto& cb = dynamic_cast<quant::ConvBn&>(p.model->find("layer2.0.conv1"));
    const int64_t per = cb.weight().numel() / cb.out_channels;  // 8 * 3 * 3
    cb.weight().data()[per] = std::numeric_limits<float>::infinity();  // channel 1's first weight
    const std::string why = export_refusal(*p.model, p.cfg, p.pre);
    INFO(why);
    CHECK(has(why, "layer 'layer2.0.conv1': weight " + std::to_string(per) + " is not finite"));
  }
  SUBCASE("a model that was prepared but never calibrated: its grids have no range") {
    auto m = tiny_resnet(1);
    quant::prepare(*m, quant::QatConfig{});
    const std::string why = export_refusal(*m, quant::QatConfig{}, Preprocess::inception());
    INFO(why);
    CHECK(has(why, "layer 'conv1': output 'relu.1' has no range"));
  }
  SUBCASE("16-bit logits (a bits override of the fc's output grid)") {
    quant::QatConfig cfg;
    cfg.bits_overrides["fc.1"] = 16;
    Prepared p = calibrated(cfg, PreprocessMode::inception, 9);
    const std::string why = export_refusal(*p.model, p.cfg, p.pre);
    INFO(why);
    CHECK(has(why, "layer 'fc.0': logit codes [-32768, 32767]"));
    CHECK(has(why, "signed int8"));
  }
  SUBCASE("unsigned logits") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    quant::QuantizerSpec spec;
    spec.is_signed = false;
    auto logits = std::make_shared<quant::ActQuant>(spec, p.cfg);
    logits->set_range({0.0f, 4.0f});
    logits->set_fake_quant(true);
    p.model->replace("fc.1", logits);
    CHECK(has(export_refusal(*p.model, p.cfg, p.pre), "layer 'fc.0': logit codes [0, 255]"));
  }
  SUBCASE("an average pool whose output grid is not its input's") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    auto pooled = std::make_shared<quant::ActQuant>(quant::QuantizerSpec{}, p.cfg);
    pooled->set_range({-1.0f, 1.0f});  // the block output's grid is [0, max] from calibration
    pooled->set_fake_quant(true);
    p.model->replace("avgpool.1", pooled);
    const std::string why = export_refusal(*p.model, p.cfg, p.pre);
    INFO(why);
    CHECK(has(why, "layer 'avgpool.0': output grid"));
    CHECK(has(why, "engine pools keep their input's grid"));
  }
  SUBCASE("a preprocessing the stem cannot fold") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    Preprocess zero = p.pre;
    zero.scale[1] = 0.0f;
    CHECK(has(export_refusal(*p.model, p.cfg, zero), "layer 'input': preprocessing scale of channel 1 is 0"));
    Preprocess gray = p.pre;
    gray.scale.resize(1);
    gray.offset.resize(1);
    CHECK(has(export_refusal(*p.model, p.cfg, gray), "layer 'input': preprocessing has 1 channels, the model 3"));
  }
  SUBCASE("an input shape the model cannot take") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    quant::ExportOptions gray;
    gray.input_c = 1;
    CHECK(has(export_refusal(*p.model, p.cfg, p.pre, gray),
              "layer 'input': the input is to have 1 channels, but the model's stem takes 3"));
    quant::ExportOptions flat;
    flat.input_h = -4;
    CHECK(has(export_refusal(*p.model, p.cfg, p.pre, flat), "layer 'input': input size 32x-4 is not positive"));
  }
  SUBCASE("class names that are not one per class") {
    Prepared p = calibrated(quant::QatConfig{}, PreprocessMode::inception, 9);
    quant::ExportOptions opt;
    opt.class_names = {"cat", "dog", "ship"};
    CHECK(has(export_refusal(*p.model, p.cfg, p.pre, opt), "layer 'fc': 3 class names for 10 classes"));
  }
  SUBCASE("a float checkpoint") {
    quant::LoadedModel loaded;
    loaded.model = tiny_resnet(1);
    loaded.preprocess = Preprocess::inception();
    loaded.checkpoint.source = "runs/float/last.ckpt";
    CHECK_THROWS_WITH_AS(quant::export_model(loaded), doctest::Contains("'runs/float/last.ckpt' is a float checkpoint"),
                         quant::ExportError);
  }
}

TEST_CASE("export: a real ResNet-20 meets the size targets (<= 0.27x the float weights at 8 bits, <= 0.15x at 4)") {
  const nn::ResNetConfig rc = nn::resnet_config("resnet20", 10);
  struct Target {
    int bits;
    double ratio;
  };
  for (const Target t : {Target{8, 0.27}, Target{4, 0.15}}) {
    const int bits = t.bits;
    const double target = t.ratio;
    CAPTURE(bits);
    quant::QatConfig cfg;
    cfg.weight_bits = bits;
    Rng rng(20 + bits);
    Prepared p = calibrated_model(std::make_shared<nn::ResNet>(rc, rng), cfg, PreprocessMode::standard, 31);
    const quant::ExportResult r = quant::export_model(*p.model, p.cfg, p.pre);
    REQUIRE(r.float_weight_bytes == 4 * 272474);  // ResNet-20's 272,474 parameters (10 classes), 4 bytes each
    const double ratio = double(r.file_bytes) / double(r.float_weight_bytes);
    MESSAGE("resnet20, ", bits, "-bit weights: file ", r.file_bytes, " bytes / float weights ", r.float_weight_bytes,
            " bytes = ", ratio, " (target <= ", target, "); packed weights ", r.weight_bytes, " bytes = ",
            double(r.weight_bytes) / double(r.float_weight_bytes));
    CHECK(ratio <= target);
  }
}
