// core/ops_norm.cpp: batch_norm forward and backward.
//
// Memory-bound, so each kernel makes as few passes as it can: one task per
// channel computes the channel's statistics and then normalizes it while the
// channel's N*H*W values are still in L2 (128x32x32 floats = 512 KB); the
// backward likewise reduces and then writes dx channel by channel.
// Statistics are summed in 16 float lanes, moved into double totals every 256
// values per lane, and shifted by the channel's first value against
// cancellation.
//
// Synchronized BN (a group of several ranks) needs the global statistics
// before it can normalize, and the global gradient sums before it can write
// dx, so there each kernel makes two passes over the channel with one
// allreduce between them.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/distributed.h"
#include "core/ops.h"
#include "core/ops_internal.h"
#include "core/profile.h"

namespace octet {

using detail::fail;
using detail::needs_grad;

namespace {

constexpr int kLanes = 16;
// Float lane sums are moved into the double totals after at most this many
// values per lane (and at the end), which bounds their rounding error.
constexpr int64_t kFlushPerLane = 256;

// 16 float lanes as one GCC vector (one zmm with AVX-512, four xmm on the
// baseline): written this way the compiler keeps the accumulators in registers.
typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

// Float lane accumulators of one channel's sums, flushed into doubles.
struct LaneSums {
  Lanes a = {}, b = {};
  int64_t count = 0;  // values per lane since the last flush
  double s1 = 0, s2 = 0;
  void flush() {
    for (int j = 0; j < kLanes; ++j) s1 += a[j], s2 += b[j];
    a = Lanes{}, b = Lanes{};
    count = 0;
  }
};

// Over the N planes of channel c: s1 = sum(x - shift), s2 = sum((x - shift)^2).
// Free functions so that OCTET_SIMD_CLONES compiles them at the machine's
// vector width; the lane structure fixes the summation order, so every clone
// gives the same bits.
OCTET_SIMD_CLONES void channel_sums(const float* x, int64_t N, int64_t C, int64_t HW, int64_t c, float shift,
                                    double& s1, double& s2) {
  LaneSums L;
  for (int64_t n = 0; n < N; ++n) {
    const float* p = x + (n * C + c) * HW;
    int64_t i = 0;
    for (; i + kLanes <= HW; i += kLanes) {
      Lanes v;
      std::memcpy(&v, p + i, sizeof v);  // an unaligned vector load
      const Lanes d = v - shift;
      L.a += d;
      L.b += d * d;
    }
    for (; i < HW; ++i) {
      const double d = double(p[i]) - shift;
      L.s1 += d;
      L.s2 += d * d;
    }
    L.count += HW / kLanes;
    if (L.count >= kFlushPerLane) L.flush();
  }
  L.flush();
  s1 += L.s1, s2 += L.s2;
}

// Over the N planes of channel c: s1 = sum(g), s2 = sum(g * (x - mean)).
OCTET_SIMD_CLONES void channel_grad_sums(const float* g, const float* x, int64_t N, int64_t C, int64_t HW, int64_t c,
                                         float mean, double& s1, double& s2) {
  LaneSums L;
  for (int64_t n = 0; n < N; ++n) {
    const float* gp = g + (n * C + c) * HW;
    const float* xp = x + (n * C + c) * HW;
    int64_t i = 0;
    for (; i + kLanes <= HW; i += kLanes) {
      Lanes gv, xv;
      std::memcpy(&gv, gp + i, sizeof gv);
      std::memcpy(&xv, xp + i, sizeof xv);
      L.a += gv;
      L.b += gv * (xv - mean);
    }
    for (; i < HW; ++i) {
      L.s1 += gp[i];
      L.s2 += double(gp[i]) * (double(xp[i]) - mean);
    }
    L.count += HW / kLanes;
    if (L.count >= kFlushPerLane) L.flush();
  }
  L.flush();
  s1 += L.s1, s2 += L.s2;
}

// y = x * a + b over channel c.
OCTET_SIMD_CLONES void channel_affine(const float* x, float* y, int64_t N, int64_t C, int64_t HW, int64_t c, float a,
                                      float b) {
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict in = x + (n * C + c) * HW;
    float* __restrict out = y + (n * C + c) * HW;
    for (int64_t i = 0; i < HW; ++i) out[i] = in[i] * a + b;
  }
}

// dx = a*g + b*(x - mean) + d over channel c.
OCTET_SIMD_CLONES void channel_dx(const float* g, const float* x, float* dx, int64_t N, int64_t C, int64_t HW,
                                  int64_t c, float a, float b, float mean, float d) {
  for (int64_t n = 0; n < N; ++n) {
    const float* __restrict gi = g + (n * C + c) * HW;
    const float* __restrict xi = x + (n * C + c) * HW;
    float* __restrict o = dx + (n * C + c) * HW;
    for (int64_t i = 0; i < HW; ++i) o[i] = a * gi[i] + b * (xi[i] - mean) + d;
  }
}

struct BnGeom {
  int64_t N, C, HW, M;  // M = N*HW values per channel
};

BnGeom bn_geom(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rm, const Tensor& rv,
               bool training, float eps) {
  const char* op = "batch_norm";
  detail::require_defined(op, x, "x");
  if (x.ndim() != 4 && x.ndim() != 2) fail(op, "x must be [N, C, H, W] or [N, C], got " + shape_str(x.shape()));
  BnGeom g{x.dim(0), x.dim(1), x.ndim() == 4 ? x.dim(2) * x.dim(3) : 1, 0};
  g.M = g.N * g.HW;
  const Shape cs{g.C};
  auto check = [&](const Tensor& t, const char* name) {
    if (t.defined() && t.shape() != cs)
      fail(op, std::string(name) + " " + shape_str(t.shape()) + " must be " + shape_str(cs) + " for x " +
                   shape_str(x.shape()));
  };
  check(gamma, "gamma");
  check(beta, "beta");
  check(rm, "running_mean");
  check(rv, "running_var");
  if (rm.defined() != rv.defined()) fail(op, "running_mean and running_var must both be given or both be undefined");
  if (!training && !rm.defined()) fail(op, "eval mode needs running_mean and running_var");
  if (training && g.M < 1) fail(op, "training mode needs at least one value per channel, x is " + shape_str(x.shape()));
  if (!(eps > 0.0f)) fail(op, "eps must be > 0");
  return g;
}

// The per-channel sum(x) and sum(x^2) of x and its count per channel, summed
// over the ranks of `group`: [sum_0 .. sum_C-1, sumsq_0 .. sumsq_C-1, count].
// channel_sums works around this rank's own shift (its lanes are float); the
// shift is taken out in double, so every rank's sums share the origin 0.
std::vector<double> global_channel_sums(const float* x, const BnGeom& s, Communicator& group) {
  const int64_t C = s.C;
  std::vector<double> t(static_cast<size_t>(2 * C + 1));
  const double m = static_cast<double>(s.M);
  parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const float shift = x[c * s.HW];
      double s1 = 0, s2 = 0;
      channel_sums(x, s.N, C, s.HW, c, shift, s1, s2);
      t[static_cast<size_t>(c)] = s1 + m * shift;
      t[static_cast<size_t>(C + c)] = s2 + shift * (2.0 * s1 + m * shift);
    }
  });
  t[static_cast<size_t>(2 * C)] = m;
  group.allreduce(t.data(), t.size(), Reduce::sum);
  return t;
}

}  // namespace

// x [N, C, H, W] or [N, C] -> same shape; per-channel scale/shift.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                  bool training, float momentum, float eps, Communicator* group) {
  const profile::Scope scope("batch_norm forward");
  const BnGeom s = bn_geom(x, gamma, beta, running_mean, running_var, training, eps);
  const int64_t N = s.N, C = s.C, HW = s.HW;
  // The synchronized path's group, null on the local one.
  Communicator* const sync = training && group && group->size() > 1 ? group : nullptr;
  Tensor y = Tensor::empty(x.shape());
  std::vector<float> mean(static_cast<size_t>(C)), invstd(static_cast<size_t>(C));
  const float* px = x.data();
  float* py = y.data();
  const float* pg = gamma.defined() ? gamma.data() : nullptr;
  const float* pb = beta.defined() ? beta.data() : nullptr;
  float* prm = running_mean.defined() ? running_mean.data() : nullptr;
  float* prv = running_var.defined() ? running_var.data() : nullptr;
  const std::vector<double> global = sync ? global_channel_sums(px, s, *sync) : std::vector<double>();
  // The batch's values per channel: the global count when synchronized.
  const double count = sync ? global[static_cast<size_t>(2 * C)] : static_cast<double>(s.M);
  parallel_for(0, C, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      double mu, var;
      if (training) {
        const double m = count;
        if (sync) {
          mu = global[static_cast<size_t>(c)] / m;
          var = std::max(0.0, global[static_cast<size_t>(C + c)] / m - mu * mu);
        } else {
          const float shift = px[c * HW];
          double s1 = 0, s2 = 0;
          channel_sums(px, N, C, HW, c, shift, s1, s2);
          mu = shift + s1 / m;
          var = std::max(0.0, s2 / m - (s1 / m) * (s1 / m));
        }
        if (prm) {
          const double unbiased = m > 1 ? var * m / (m - 1) : var;
          prm[c] = static_cast<float>((1.0 - momentum) * prm[c] + momentum * mu);
          prv[c] = static_cast<float>((1.0 - momentum) * prv[c] + momentum * unbiased);
        }
      } else {
        mu = prm[c];
        var = prv[c];
      }
      const double inv = 1.0 / std::sqrt(var + eps);
      mean[static_cast<size_t>(c)] = static_cast<float>(mu);
      invstd[static_cast<size_t>(c)] = static_cast<float>(inv);
      const double gm = pg ? pg[c] : 1.0;
      const float a = static_cast<float>(gm * inv);
      const float b = static_cast<float>((pb ? pb[c] : 0.0) - mu * gm * inv);
      channel_affine(px, py, N, C, HW, c, a, b);
    }
  });
  const bool gx = needs_grad(x), gg = needs_grad(gamma), gb = needs_grad(beta);
  if (!gx && !gg && !gb) return y;
  Tensor sx = x.detach();
  Tensor sgamma = gamma.defined() ? gamma.detach() : Tensor();
  return record(
      "batch_norm", y, {x, gamma, beta},
      [s, sx, sgamma, mean = std::move(mean), invstd = std::move(invstd), training, gx, gg, gb, sync,
       count](const Tensor& gy) -> std::vector<Tensor> {
        Tensor dx = gx ? Tensor::empty(sx.shape()) : Tensor();
        Tensor dgamma = gg ? Tensor::empty({s.C}) : Tensor();
        Tensor dbeta = gb ? Tensor::empty({s.C}) : Tensor();
        const float* pxs = sx.data();
        const float* pgy = gy.data();
        float* pdx = gx ? dx.data() : nullptr;
        // Channel c's dx from sg = sum(g) and sgx = sum(g * (x - mean)) over
        // the (global) batch: dx = A*g + B*(x - mean) + D. Train: A = gamma*inv,
        // B = -gamma*inv^3*sgx/M, D = -A*sg/M. Eval (the running stats are
        // constants): dx = A*g.
        auto write_dx = [&](int64_t c, double sg, double sgx) {
          const float mu = mean[static_cast<size_t>(c)];
          const double inv = invstd[static_cast<size_t>(c)];
          const double gm = sgamma.defined() ? sgamma.data()[c] : 1.0;
          const double A = gm * inv;
          double B = 0, D = 0;
          if (training) {
            B = -gm * inv * inv * inv * sgx / count;
            D = -A * sg / count;
          }
          const float a = static_cast<float>(A), b = static_cast<float>(B), d = static_cast<float>(D);
          channel_dx(pgy, pxs, pdx, s.N, s.C, s.HW, c, a, b, mu, d);
        };
        // Synchronized: [sg_0 .. sg_C-1, sgx_0 .. sgx_C-1] of this rank, then
        // of every rank once reduced. dgamma and dbeta stay this rank's share.
        std::vector<double> sums(sync && pdx ? static_cast<size_t>(2 * s.C) : 0);
        parallel_for(0, s.C, 1, [&](int64_t cb, int64_t ce) {
          for (int64_t c = cb; c < ce; ++c) {
            double sg = 0, sgx = 0;  // sum(g), sum(g * (x - mean))
            channel_grad_sums(pgy, pxs, s.N, s.C, s.HW, c, mean[static_cast<size_t>(c)], sg, sgx);
            if (gg) dgamma.data()[c] = static_cast<float>(sgx * invstd[static_cast<size_t>(c)]);
            if (gb) dbeta.data()[c] = static_cast<float>(sg);
            if (!pdx) continue;
            if (!sums.empty()) {
              sums[static_cast<size_t>(c)] = sg;
              sums[static_cast<size_t>(s.C + c)] = sgx;
            } else {
              write_dx(c, sg, sgx);
            }
          }
        });
        if (!sums.empty()) {
          sync->allreduce(sums.data(), sums.size(), Reduce::sum);
          parallel_for(0, s.C, 1, [&](int64_t cb, int64_t ce) {
            for (int64_t c = cb; c < ce; ++c)
              write_dx(c, sums[static_cast<size_t>(c)], sums[static_cast<size_t>(s.C + c)]);
          });
        }
        return {dx, dgamma, dbeta};
      });
}

}  // namespace octet
