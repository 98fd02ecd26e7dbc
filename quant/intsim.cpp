// quant/intsim.cpp: the integer simulation (see intsim.h). Plain NCHW loops;
// the rounding rules come from engine/fixedpoint.h and nowhere else.
#include "quant/intsim.h"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "core/parallel.h"
#include "engine/builder.h"
#include "engine/fixedpoint.h"

namespace octet::quant {

namespace {

using engine::carry_offset;  // the carried (int8) domain of a dtype: uint8 codes move down by 128
using engine::DType;
using engine::OpDesc;
using engine::OpType;
using engine::TensorDesc;
namespace param = engine::param;

int8_t clamp8(int32_t v, int32_t lo, int32_t hi) { return static_cast<int8_t>(std::clamp(v, lo, hi)); }

// floor(a / b) and ceil(a / b) for b > 0 (C++ division truncates toward 0).
int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
int ceil_div(int a, int b) { return -floor_div(-a, b); }

struct Dims {
  int h = 1, w = 1, c = 1;
};
Dims dims_of(const TensorDesc& t) {
  if (t.shape.size() == 3) return {static_cast<int>(t.shape[0]), static_cast<int>(t.shape[1]), static_cast<int>(t.shape[2])};
  return {1, 1, static_cast<int>(t.numel())};
}

}  // namespace

IntSim::IntSim(const engine::ModelDesc& model) : model_(engine::decode(engine::encode(model), "intsim")) {
  const TensorDesc& in = model_.tensors[model_.input];
  in_h_ = static_cast<int>(in.shape[0]);
  in_w_ = static_cast<int>(in.shape[1]);
  in_c_ = static_cast<int>(in.shape[2]);
  classes_ = static_cast<int>(model_.tensors[model_.output].numel());
}

int32_t IntSim::carried_zero_point(uint32_t id) const {
  const TensorDesc& t = model_.tensors.at(id);
  return t.zero_point - carry_offset(t.dtype);
}

double IntSim::real(uint32_t id, int8_t q) const {
  return model_.tensors.at(id).scale * (static_cast<int32_t>(q) - carried_zero_point(id));
}

IntSim::Trace IntSim::run_image(const uint8_t* pixels_hwc) const {
  Trace t;
  run_into(pixels_hwc, t);
  return t;
}

std::vector<int8_t> IntSim::run(const uint8_t* pixels_nhwc, int batch) const {
  if (batch < 0) throw std::invalid_argument("IntSim::run: negative batch");
  if (batch > 0 && pixels_nhwc == nullptr) throw std::invalid_argument("IntSim::run: no pixels");
  std::vector<int8_t> out(static_cast<size_t>(batch) * classes_);
  octet::parallel_for(0, batch, 1, [&](int64_t b, int64_t e) {
    Trace t;
    for (int64_t n = b; n < e; ++n) {
      run_into(pixels_nhwc + static_cast<size_t>(n) * input_bytes(), t);
      std::copy(t.values[model_.output].begin(), t.values[model_.output].end(),
                out.begin() + static_cast<ptrdiff_t>(n * classes_));
    }
  });
  return out;
}

void IntSim::run_into(const uint8_t* px, Trace& t) const {
  const auto& T = model_.tensors;
  t.values.resize(T.size());
  std::vector<int32_t> centered;  // x - x_zp of a conv/fc input, CHW
  std::vector<int32_t> acc;       // one output plane of accumulators

  for (const OpDesc& op : model_.ops) {
    const TensorDesc& yt = T[op.output];
    std::vector<int8_t>& y = t.values[op.output];
    y.assign(static_cast<size_t>(yt.numel()), 0);
    const int32_t zp_y = carried_zero_point(op.output);
    const int32_t off_y = carry_offset(yt.dtype);

    switch (op.type) {
      case OpType::input: {
        // HWC pixels -> CHW carried int8: q = pixel - 128.
        for (int h = 0; h < in_h_; ++h)
          for (int w = 0; w < in_w_; ++w)
            for (int c = 0; c < in_c_; ++c)
              y[(static_cast<size_t>(c) * in_h_ + h) * in_w_ + w] =
                  static_cast<int8_t>(static_cast<int32_t>(px[(static_cast<size_t>(h) * in_w_ + w) * in_c_ + c]) - 128);
        break;
      }

      case OpType::conv2d:
      case OpType::fully_connected: {
        const uint32_t xi = op.inputs[0];
        const std::vector<int8_t>& x = t.values[xi];
        const int32_t zp_x = carried_zero_point(xi);
        const TensorDesc& wt = T[op.inputs[1]];
        const std::vector<int32_t>& bias = T[op.inputs[2]].i32;
        const std::vector<int32_t>& mult = T[op.inputs[3]].i32;
        const std::vector<int32_t>& shift = T[op.inputs[4]].i32;
        const bool conv = op.type == OpType::conv2d;
        const int32_t lo = op.params[conv ? param::kConvActMin : param::kFcActMin] - off_y;
        const int32_t hi = op.params[conv ? param::kConvActMax : param::kFcActMax] - off_y;

        centered.resize(x.size());
        for (size_t i = 0; i < x.size(); ++i) centered[i] = static_cast<int32_t>(x[i]) - zp_x;

        if (!conv) {
          // w [Cout, K], x flattened in HWC order; we hold x as CHW.
          const Dims d = dims_of(T[xi]);
          const int out_c = static_cast<int>(wt.shape[0]);
          const int64_t K = wt.shape[1];
          for (int o = 0; o < out_c; ++o) {
            const int8_t* w = wt.i8.data() + static_cast<size_t>(o) * K;
            int32_t a = bias[o];
            for (int h = 0; h < d.h; ++h)
              for (int ww = 0; ww < d.w; ++ww)
                for (int c = 0; c < d.c; ++c)
                  a += centered[(static_cast<size_t>(c) * d.h + h) * d.w + ww] *
                       static_cast<int32_t>(w[(static_cast<size_t>(h) * d.w + ww) * d.c + c]);
            y[o] = clamp8(zp_y + engine::MultiplyByQuantizedMultiplier(a, mult[o], shift[o]), lo, hi);
          }
          break;
        }

        // conv2d: w [Cout, KH, KW, Cin/g]; x CHW; y CHW.
        const Dims d = dims_of(T[xi]);
        const Dims od = dims_of(yt);
        const int out_c = static_cast<int>(wt.shape[0]);
        const int kh_n = static_cast<int>(wt.shape[1]), kw_n = static_cast<int>(wt.shape[2]);
        const int cin_g = static_cast<int>(wt.shape[3]);
        const int stride = op.params[param::kStride], pad = op.params[param::kPad];
        const int groups = op.params[param::kGroups];
        const int cout_g = out_c / groups;
        const size_t plane = static_cast<size_t>(od.h) * od.w;
        acc.resize(plane);
        for (int o = 0; o < out_c; ++o) {
          std::fill(acc.begin(), acc.end(), bias[o]);
          const int g = o / cout_g;
          for (int ic = 0; ic < cin_g; ++ic) {
            const int32_t* xc = centered.data() + static_cast<size_t>(g * cin_g + ic) * d.h * d.w;
            for (int kh = 0; kh < kh_n; ++kh) {
              for (int kw = 0; kw < kw_n; ++kw) {
                const int32_t wv = wt.i8[((static_cast<size_t>(o) * kh_n + kh) * kw_n + kw) * cin_g + ic];
                if (wv == 0) continue;
                // Output columns whose input column iw = ow*stride - pad + kw is in the image;
                // the others read padding, which is real 0 and adds nothing.
                const int ow_lo = std::max(0, ceil_div(pad - kw, stride));
                const int ow_hi = std::min(od.w, floor_div(d.w - 1 + pad - kw, stride) + 1);
                for (int oh = 0; oh < od.h; ++oh) {
                  const int ih = oh * stride - pad + kh;
                  if (ih < 0 || ih >= d.h) continue;
                  const int32_t* xrow = xc + static_cast<size_t>(ih) * d.w;
                  int32_t* arow = acc.data() + static_cast<size_t>(oh) * od.w;
                  for (int ow = ow_lo; ow < ow_hi; ++ow) arow[ow] += wv * xrow[ow * stride - pad + kw];
                }
              }
            }
          }
          int8_t* yp = y.data() + static_cast<size_t>(o) * plane;
          for (size_t i = 0; i < plane; ++i)
            yp[i] = clamp8(zp_y + engine::MultiplyByQuantizedMultiplier(acc[i], mult[o], shift[o]), lo, hi);
        }
        break;
      }

      case OpType::add: {
        const std::vector<int8_t>& a = t.values[op.inputs[0]];
        const std::vector<int8_t>& b = t.values[op.inputs[1]];
        const int32_t zp_a = carried_zero_point(op.inputs[0]);
        const int32_t zp_b = carried_zero_point(op.inputs[1]);
        const auto& p = op.params;
        const int32_t ls = p[param::kLeftShift];
        const int32_t lo = p[param::kAddActMin] - off_y, hi = p[param::kAddActMax] - off_y;
        for (size_t i = 0; i < y.size(); ++i) {
          const int32_t as = (static_cast<int32_t>(a[i]) - zp_a) * (int32_t{1} << ls);
          const int32_t bs = (static_cast<int32_t>(b[i]) - zp_b) * (int32_t{1} << ls);
          const int32_t ar = engine::MultiplyByQuantizedMultiplier(as, p[param::kAMult], p[param::kAShift]);
          const int32_t br = engine::MultiplyByQuantizedMultiplier(bs, p[param::kBMult], p[param::kBShift]);
          const int32_t sum = engine::MultiplyByQuantizedMultiplier(ar + br, p[param::kOutMult], p[param::kOutShift]);
          y[i] = clamp8(zp_y + sum, lo, hi);
        }
        break;
      }

      case OpType::max_pool:
      case OpType::avg_pool: {
        const std::vector<int8_t>& x = t.values[op.inputs[0]];
        const Dims d = dims_of(T[op.inputs[0]]);
        const Dims od = dims_of(yt);
        const int kh_n = op.params[param::kPoolKH], kw_n = op.params[param::kPoolKW];
        const int stride = op.params[param::kPoolStride], pad = op.params[param::kPoolPad];
        const bool is_max = op.type == OpType::max_pool;
        for (int c = 0; c < d.c; ++c)
          for (int oh = 0; oh < od.h; ++oh)
            for (int ow = 0; ow < od.w; ++ow) {
              int32_t best = std::numeric_limits<int32_t>::min(), sum = 0, count = 0;
              for (int kh = 0; kh < kh_n; ++kh)
                for (int kw = 0; kw < kw_n; ++kw) {
                  const int ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                  if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) continue;
                  const int32_t v = x[(static_cast<size_t>(c) * d.h + ih) * d.w + iw];
                  best = std::max(best, v);
                  sum += v;
                  ++count;
                }
              // The format guarantees pad < kernel, so every window holds an in-image value.
              y[(static_cast<size_t>(c) * od.h + oh) * od.w + ow] =
                  static_cast<int8_t>(is_max ? best : engine::RoundedDivide(sum, count));
            }
        break;
      }

      case OpType::global_avg_pool: {
        const std::vector<int8_t>& x = t.values[op.inputs[0]];
        const Dims d = dims_of(T[op.inputs[0]]);
        const int32_t hw = d.h * d.w;
        for (int c = 0; c < d.c; ++c) {
          int64_t sum = 0;
          for (int32_t i = 0; i < hw; ++i) sum += x[static_cast<size_t>(c) * hw + i];
          // The engine sums in int32, which every real model fits (2^24 values of -128 would not).
          if (sum > std::numeric_limits<int32_t>::max() || sum < std::numeric_limits<int32_t>::min())
            throw std::runtime_error("IntSim: global_avg_pool '" + op.name + "' sum does not fit int32");
          y[c] = static_cast<int8_t>(engine::RoundedDivide(static_cast<int32_t>(sum), hw));
        }
        break;
      }
    }
  }
}

}  // namespace octet::quant
