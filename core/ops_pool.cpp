// core/ops_pool.cpp: max_pool2d, avg_pool2d, global_avg_pool over NCHW,
// forward and backward. Every kernel works plane by plane (one (n, c) image
// channel), planes split across tasks: no two tasks touch the same memory.
#include <limits>
#include <memory>
#include <vector>

#include "core/ops.h"
#include "core/ops_internal.h"
#include "core/profile.h"

namespace octet {

using detail::fail;
using detail::needs_grad;

namespace {

struct PoolGeom {
  int64_t planes, H, W, OH, OW, k, s, p;
};

PoolGeom pool_geom(const char* op, const Tensor& x, int kernel, int stride, int pad) {
  detail::require_ndim(op, x, "x", 4);
  if (kernel < 1) fail(op, "kernel must be >= 1, got " + std::to_string(kernel));
  if (stride < 1) fail(op, "stride must be >= 1, got " + std::to_string(stride));
  if (pad < 0 || pad > kernel / 2)
    fail(op, "pad must be in [0, kernel/2] = [0, " + std::to_string(kernel / 2) + "], got " + std::to_string(pad));
  PoolGeom g{x.dim(0) * x.dim(1), x.dim(2), x.dim(3), 0, 0, kernel, stride, pad};
  if (g.H + 2 * pad < kernel || g.W + 2 * pad < kernel)
    fail(op, "kernel " + std::to_string(kernel) + " is larger than the padded input " + shape_str(x.shape()));
  g.OH = (g.H + 2 * pad - kernel) / stride + 1;
  g.OW = (g.W + 2 * pad - kernel) / stride + 1;
  return g;
}

// Planes per task so that a task touches about 64K input elements.
int64_t plane_grain(int64_t plane_size) { return std::max<int64_t>(1, detail::kElementwiseGrain / std::max<int64_t>(1, plane_size)); }

}  // namespace

// x [N, C, H, W] -> [N, C, OH, OW]; the window max, padding excluded.
Tensor max_pool2d(const Tensor& x, int kernel, int stride, int pad) {
  const profile::Scope scope("max_pool2d forward");
  const PoolGeom g = pool_geom("max_pool2d", x, kernel, stride, pad);
  Tensor y = Tensor::empty({x.dim(0), x.dim(1), g.OH, g.OW});
  const bool grad = needs_grad(x);
  // Argmax (index within the input plane) of every output, for backward.
  auto arg = grad ? std::make_shared<std::vector<int32_t>>(static_cast<size_t>(y.numel())) : nullptr;
  const float* px = x.data();
  float* py = y.data();
  int32_t* pa = arg ? arg->data() : nullptr;
  parallel_for(0, g.planes, plane_grain(g.H * g.W), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const float* in = px + pl * g.H * g.W;
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          float m = -std::numeric_limits<float>::infinity();
          int64_t at = -1;
          for (int64_t kh = 0; kh < g.k; ++kh) {
            int64_t ih = oh * g.s - g.p + kh;
            if (ih < 0 || ih >= g.H) continue;
            for (int64_t kw = 0; kw < g.k; ++kw) {
              int64_t iw = ow * g.s - g.p + kw;
              if (iw < 0 || iw >= g.W) continue;
              float v = in[ih * g.W + iw];
              if (v > m || at < 0) m = v, at = ih * g.W + iw;
            }
          }
          int64_t o = (pl * g.OH + oh) * g.OW + ow;
          py[o] = m;
          if (pa) pa[o] = static_cast<int32_t>(at);
        }
    }
  });
  if (!grad) return y;
  Shape xs = x.shape();
  return record("max_pool2d", y, {x}, [g, xs, arg](const Tensor& gy) -> std::vector<Tensor> {
    Tensor dx = Tensor::zeros(xs);
    const float* pg = gy.data();
    float* pd = dx.data();
    const int32_t* idx = arg->data();
    parallel_for(0, g.planes, plane_grain(g.H * g.W), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        float* d = pd + pl * g.H * g.W;
        for (int64_t o = pl * g.OH * g.OW; o < (pl + 1) * g.OH * g.OW; ++o) d[idx[o]] += pg[o];
      }
    });
    return {dx};
  });
}

// x [N, C, H, W] -> [N, C, OH, OW]; window sum / (kernel*kernel).
Tensor avg_pool2d(const Tensor& x, int kernel, int stride, int pad) {
  const profile::Scope scope("avg_pool2d forward");
  const PoolGeom g = pool_geom("avg_pool2d", x, kernel, stride, pad);
  Tensor y = Tensor::empty({x.dim(0), x.dim(1), g.OH, g.OW});
  const float inv = 1.0f / static_cast<float>(kernel * kernel);
  const float* px = x.data();
  float* py = y.data();
  parallel_for(0, g.planes, plane_grain(g.H * g.W), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const float* in = px + pl * g.H * g.W;
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          float s = 0.0f;
          for (int64_t kh = 0; kh < g.k; ++kh) {
            int64_t ih = oh * g.s - g.p + kh;
            if (ih < 0 || ih >= g.H) continue;
            for (int64_t kw = 0; kw < g.k; ++kw) {
              int64_t iw = ow * g.s - g.p + kw;
              if (iw >= 0 && iw < g.W) s += in[ih * g.W + iw];
            }
          }
          py[(pl * g.OH + oh) * g.OW + ow] = s * inv;
        }
    }
  });
  if (!needs_grad(x)) return y;
  Shape xs = x.shape();
  return record("avg_pool2d", y, {x}, [g, xs, inv](const Tensor& gy) -> std::vector<Tensor> {
    Tensor dx = Tensor::zeros(xs);
    const float* pg = gy.data();
    float* pd = dx.data();
    parallel_for(0, g.planes, plane_grain(g.H * g.W), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        float* d = pd + pl * g.H * g.W;
        for (int64_t oh = 0; oh < g.OH; ++oh)
          for (int64_t ow = 0; ow < g.OW; ++ow) {
            const float v = pg[(pl * g.OH + oh) * g.OW + ow] * inv;
            for (int64_t kh = 0; kh < g.k; ++kh) {
              int64_t ih = oh * g.s - g.p + kh;
              if (ih < 0 || ih >= g.H) continue;
              for (int64_t kw = 0; kw < g.k; ++kw) {
                int64_t iw = ow * g.s - g.p + kw;
                if (iw >= 0 && iw < g.W) d[ih * g.W + iw] += v;
              }
            }
          }
      }
    });
    return {dx};
  });
}

// x [N, C, H, W] -> [N, C]: mean over H, W.
Tensor global_avg_pool(const Tensor& x) {
  const profile::Scope scope("global_avg_pool forward");
  detail::require_ndim("global_avg_pool", x, "x", 4);
  const int64_t planes = x.dim(0) * x.dim(1), HW = x.dim(2) * x.dim(3);
  if (HW == 0) fail("global_avg_pool", "empty spatial dims in " + shape_str(x.shape()));
  Tensor y = Tensor::empty({x.dim(0), x.dim(1)});
  const float* px = x.data();
  float* py = y.data();
  parallel_for(0, planes, plane_grain(HW), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const float* in = px + pl * HW;
      double s = 0;
      for (int64_t i = 0; i < HW; ++i) s += in[i];
      py[pl] = static_cast<float>(s / static_cast<double>(HW));
    }
  });
  if (!needs_grad(x)) return y;
  Shape xs = x.shape();
  return record("global_avg_pool", y, {x}, [xs, planes, HW](const Tensor& gy) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(xs);
    const float* pg = gy.data();
    float* pd = dx.data();
    const float inv = 1.0f / static_cast<float>(HW);
    parallel_for(0, planes, plane_grain(HW), [&](int64_t b, int64_t e) {
      for (int64_t pl = b; pl < e; ++pl) {
        const float v = pg[pl] * inv;
        for (int64_t i = 0; i < HW; ++i) pd[pl * HW + i] = v;
      }
    });
    return {dx};
  });
}

}  // namespace octet
