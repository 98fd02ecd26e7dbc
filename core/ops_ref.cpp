// core/ops_ref.cpp: the reference kernels (see core/ops_ref.h).
#include "core/ops_ref.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

namespace octet::ref {

namespace {
int64_t out_size(int64_t in, int64_t k, int64_t stride, int64_t pad) { return (in + 2 * pad - k) / stride + 1; }
}  // namespace

// x [N, Cin, H, W], w [Cout, Cin/G, KH, KW] -> y [N, Cout, OH, OW]
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Conv2dOptions opt) {
  const int64_t N = x.dim(0), Cin = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t Cout = w.dim(0), Cg = w.dim(1), KH = w.dim(2), KW = w.dim(3);
  const int64_t G = opt.groups, Og = Cout / G;
  const int64_t OH = out_size(H, KH, opt.stride, opt.pad), OW = out_size(W, KW, opt.stride, opt.pad);
  if (Cg * G != Cin) throw std::invalid_argument("ref::conv2d: channel mismatch");
  Tensor y = Tensor::empty({N, Cout, OH, OW});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < Cout; ++co) {
      int64_t g = co / Og;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = bias.defined() ? bias.data()[co] : 0.0;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t ih = oh * opt.stride - opt.pad + kh, iw = ow * opt.stride - opt.pad + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += double(x.data()[((n * Cin + g * Cg + ci) * H + ih) * W + iw]) *
                       w.data()[((co * Cg + ci) * KH + kh) * KW + kw];
              }
          y.data()[((n * Cout + co) * OH + oh) * OW + ow] = static_cast<float>(acc);
        }
    }
  return y;
}

Conv2dGrads conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Conv2dOptions opt) {
  const int64_t N = x.dim(0), Cin = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t Cout = w.dim(0), Cg = w.dim(1), KH = w.dim(2), KW = w.dim(3);
  const int64_t G = opt.groups, Og = Cout / G;
  const int64_t OH = gy.dim(2), OW = gy.dim(3);
  std::vector<double> dx(static_cast<size_t>(x.numel()), 0.0), dw(static_cast<size_t>(w.numel()), 0.0),
      db(static_cast<size_t>(Cout), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t co = 0; co < Cout; ++co) {
      int64_t g = co / Og;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double go = gy.data()[((n * Cout + co) * OH + oh) * OW + ow];
          db[static_cast<size_t>(co)] += go;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t ih = oh * opt.stride - opt.pad + kh, iw = ow * opt.stride - opt.pad + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                size_t xi = static_cast<size_t>(((n * Cin + g * Cg + ci) * H + ih) * W + iw);
                size_t wi = static_cast<size_t>(((co * Cg + ci) * KH + kh) * KW + kw);
                dx[xi] += go * w.data()[wi];
                dw[wi] += go * x.data()[xi];
              }
        }
    }
  auto to_tensor = [](const std::vector<double>& v, const Shape& s) {
    Tensor t = Tensor::empty(s);
    for (size_t i = 0; i < v.size(); ++i) t.data()[i] = static_cast<float>(v[i]);
    return t;
  };
  return {to_tensor(dx, x.shape()), to_tensor(dw, w.shape()), to_tensor(db, {Cout})};
}

// x [N, C, H, W] -> [N, C, OH, OW]; padding never wins the max.
Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t OH = out_size(H, kernel, stride, pad), OW = out_size(W, kernel, stride, pad);
  Tensor y = Tensor::empty({N, C, OH, OW});
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        float m = -std::numeric_limits<float>::infinity();
        for (int kh = 0; kh < kernel; ++kh)
          for (int kw = 0; kw < kernel; ++kw) {
            int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) m = std::max(m, x.data()[(p * H + ih) * W + iw]);
          }
        y.data()[(p * OH + oh) * OW + ow] = m;
      }
  return y;
}

// x [N, C, H, W] -> [N, C, OH, OW]; divides by kernel*kernel (padding counts).
Tensor avg_pool2d(const Tensor& x, int kernel, int stride, int pad) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t OH = out_size(H, kernel, stride, pad), OW = out_size(W, kernel, stride, pad);
  Tensor y = Tensor::empty({N, C, OH, OW});
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        double s = 0;
        for (int kh = 0; kh < kernel; ++kh)
          for (int kw = 0; kw < kernel; ++kw) {
            int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += x.data()[(p * H + ih) * W + iw];
          }
        y.data()[(p * OH + oh) * OW + ow] = static_cast<float>(s / (kernel * kernel));
      }
  return y;
}

// x [N, C, H, W] or [N, C]; per-channel statistics over N, H, W.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                  bool training, float momentum, float eps) {
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.numel() / (N * C), M = N * HW;
  Tensor y = Tensor::empty(x.shape());
  for (int64_t c = 0; c < C; ++c) {
    double mean, var;
    if (training) {
      double s = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) s += x.data()[(n * C + c) * HW + i];
      mean = s / M;
      double ss = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) {
          double d = x.data()[(n * C + c) * HW + i] - mean;
          ss += d * d;
        }
      var = ss / M;
      if (running_mean.defined()) {
        running_mean.data()[c] = static_cast<float>((1.0 - momentum) * running_mean.data()[c] + momentum * mean);
        double unbiased = M > 1 ? ss / (M - 1) : var;
        running_var.data()[c] = static_cast<float>((1.0 - momentum) * running_var.data()[c] + momentum * unbiased);
      }
    } else {
      mean = running_mean.data()[c];
      var = running_var.data()[c];
    }
    double inv = 1.0 / std::sqrt(var + eps);
    double gm = gamma.defined() ? gamma.data()[c] : 1.0, bt = beta.defined() ? beta.data()[c] : 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t k = (n * C + c) * HW + i;
        y.data()[k] = static_cast<float>((x.data()[k] - mean) * inv * gm + bt);
      }
  }
  return y;
}

}  // namespace octet::ref
