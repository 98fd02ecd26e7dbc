// engine/kernels_conv.cpp: ConvKernel, the prepared convolution
// x [N,H,W,Cin] int8 -> y [N,OH,OW,Cout] int8 (engine/kernels.h).
//
// At prepare: the weights are packed for the ISA and the zero-point
// correction is folded into the bias (the scheme and layouts are in
// engine/kernels_internal.h). At run: one pass copies the batch into the
// padded input of the scratch (the pre-pass), then the ISA's tile loop
// computes the output pixels, split over the engine's threads. Isa::reference
// runs conv2d_ref image by image instead.
#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/kernels.h"
#include "engine/kernels_internal.h"

namespace octet::engine {

namespace {

using detail::ConvBlock;
using detail::ConvView;

enum class Family { dot_u8, dot_s8, s16 };

struct IsaTraits {
  Family family;
  int lanes;   // output channels per vector
  int kstep;   // k values per packed group (cin_gp is a multiple of it)
  int nr_max;  // vectors per block
  void (*pixels)(const ConvView&, const uint8_t*, int8_t*, size_t, size_t);
};

IsaTraits traits(Isa isa) {
  // Only the kernels of the target architecture exist (isa_supported says so).
  switch (isa) {
#if defined(__x86_64__)
    case Isa::amx:  // for the convolutions AMX does not take (see use_amx)
    case Isa::avx512_vnni: return {Family::dot_u8, 16, 4, 4, detail::conv_pixels_avx512_vnni};
    case Isa::avx2: return {Family::s16, 8, 2, 2, detail::conv_pixels_avx2};
#elif defined(__aarch64__)
    case Isa::neon_dot: return {Family::dot_s8, 4, 4, 4, detail::conv_pixels_neon_dot};
    case Isa::neon: return {Family::s16, 4, 1, 4, detail::conv_pixels_neon};
#endif
    default: break;
  }
  return {Family::s16, 1, 1, 1, nullptr};
}

constexpr size_t kAlign = 64;

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("ConvKernel: " + what); }

void validate(const ConvGeometry& g, const int8_t* w, const Requant& rq) {
  auto pos = [](int v) { return v >= 1; };
  if (!pos(g.batch) || !pos(g.in_h) || !pos(g.in_w) || !pos(g.in_c) || !pos(g.out_c) || !pos(g.kernel_h) ||
      !pos(g.kernel_w) || !pos(g.stride) || !pos(g.groups) || g.pad < 0)
    bad("geometry has a non-positive size (or negative padding)");
  if (g.in_c % g.groups || g.out_c % g.groups)
    bad("groups " + std::to_string(g.groups) + " must divide in_c " + std::to_string(g.in_c) + " and out_c " +
        std::to_string(g.out_c));
  if (g.in_h + 2 * g.pad < g.kernel_h || g.in_w + 2 * g.pad < g.kernel_w) bad("kernel larger than the padded input");
  if (!w) bad("no weights");
  if (rq.multiplier.size() != static_cast<size_t>(g.out_c) || rq.shift.size() != static_cast<size_t>(g.out_c))
    bad("requantization needs one multiplier and one shift per output channel");
  for (int c = 0; c < g.out_c; ++c) {
    const int32_t m = rq.multiplier[c], s = rq.shift[c];
    if (!(m == 0 || m >= (int32_t{1} << 30)) || s < -31 || s > 30)
      bad("channel " + std::to_string(c) + ": multiplier " + std::to_string(m) + " / shift " + std::to_string(s) +
          " outside [2^30, 2^31) / [-31, 30]");
  }
  if (rq.act_min > rq.act_max || rq.act_min < -128 || rq.act_max > 127)
    bad("activation clamp must be a sub-range of [-128, 127]");
  if (rq.zp_out < -128 || rq.zp_out > 127) bad("output zero point must be in [-128, 127]");
}

}  // namespace

struct ConvKernel::Impl {
  ConvGeometry g;
  Isa isa = Isa::reference;
  int32_t x_zp = 0;
  Requant rq;
  // Isa::reference: the weights and bias as given.
  std::vector<int8_t> w_ref;
  std::vector<int32_t> bias_ref;
  // Fast ISAs: packed weights, blocks and per-lane parameters; see kernels_internal.h.
  IsaTraits tr{};
  std::vector<int8_t> w8;  // packed weights, int8 for every family (s16 widens them as it loads)
  std::vector<ConvBlock> blocks;
  std::vector<int32_t> bias, mult, lshift, rshift;
  ConvView view;
  size_t esize = 1;        // bytes per element of the padded input
  size_t image_bytes = 0;  // padded input bytes per image
  size_t grain = 1;        // pixels (AMX: units) per task
  bool amx = false;        // the AMX unit loop (Isa::amx, groups 1, rows of >= 4 pixels)

  void pack(const int8_t* w, const int32_t* b);
  void pack_amx(const int8_t* w, const int32_t* b);
  void set_requant(const ConvBlock& bl, size_t width, size_t k_in, const int8_t* w, const int32_t* b);
  void set_view(int cin_gp);
};

void ConvKernel::Impl::pack(const int8_t* w, const int32_t* b) {
  const int cin_g = g.in_c_per_group(), cout_g = g.out_c_per_group();
  const int cin_gp = (cin_g + tr.kstep - 1) / tr.kstep * tr.kstep;
  const int taps = g.kernel_h * g.kernel_w;
  const size_t kp = static_cast<size_t>(taps) * cin_gp;  // padded K
  const size_t k_in = static_cast<size_t>(taps) * cin_g;  // K of the given weights
  // Every array at its final size at once: grown by doubling, they would hold
  // up to twice the weights while packing (and for as long as they live).
  const size_t lanes_total = static_cast<size_t>(g.groups) * ((cout_g + tr.lanes - 1) / tr.lanes) * tr.lanes;
  w8.reserve(kp * lanes_total);
  for (auto* a : {&bias, &mult, &lshift, &rshift}) a->reserve(lanes_total);

  for (int grp = 0; grp < g.groups; ++grp) {
    const int nvec = (cout_g + tr.lanes - 1) / tr.lanes;
    for (int v0 = 0; v0 < nvec; v0 += tr.nr_max) {
      ConvBlock bl;
      bl.group = grp;
      bl.nr = std::min(tr.nr_max, nvec - v0);
      bl.oc0 = grp * cout_g + v0 * tr.lanes;
      bl.count = std::min(bl.nr * tr.lanes, cout_g - v0 * tr.lanes);
      bl.w_offset = blocks.empty() ? 0 : blocks.back().w_offset + kp * blocks.back().nr * tr.lanes;
      bl.param = bias.size();
      blocks.push_back(bl);
      const size_t width = static_cast<size_t>(bl.nr) * tr.lanes;
      const size_t elems = kp * width;
      w8.resize(w8.size() + elems, 0);  // within the reserve: no reallocation
      int8_t* packed = w8.data() + bl.w_offset;
      for (size_t kk = 0; kk < kp / tr.kstep; ++kk)
        for (size_t lane = 0; lane < width; ++lane)
          for (int j = 0; j < tr.kstep; ++j) {
            const size_t k = kk * tr.kstep + j;
            const size_t tap = k / cin_gp, c = k % cin_gp;
            if (static_cast<int>(lane) >= bl.count || static_cast<int>(c) >= cin_g) continue;
            const size_t oc = static_cast<size_t>(bl.oc0) + lane;
            packed[(kk * width + lane) * tr.kstep + j] = w[oc * k_in + tap * cin_g + c];
          }
      set_requant(bl, width, k_in, w, b);
    }
  }
  set_view(cin_gp);
  const size_t macs_per_pixel = kp * static_cast<size_t>(g.out_c_per_group()) * g.groups;
  grain = std::max<size_t>(16, align_up((size_t{1} << 19) / std::max<size_t>(macs_per_pixel, 1), 16));
}

// Per-lane bias' (with the family's zero-point correction), multiplier and
// shifts of one block, appended to the parameter arrays.
void ConvKernel::Impl::set_requant(const ConvBlock& bl, size_t width, size_t k_in, const int8_t* w, const int32_t* b) {
  // Zero point folded into the bias: what the pre-pass adds to x, times sum w.
  const int64_t x_offset = tr.family == Family::dot_u8 ? x_zp + 128 : tr.family == Family::dot_s8 ? x_zp : 0;
  for (size_t lane = 0; lane < width; ++lane) {
    const bool valid = static_cast<int>(lane) < bl.count;
    const size_t oc = static_cast<size_t>(bl.oc0) + lane;
    int64_t wsum = 0;
    if (valid)
      for (size_t k = 0; k < k_in; ++k) wsum += w[oc * k_in + k];
    // Wraps modulo 2^32 on purpose: only the final accumulator must fit.
    const uint32_t bq = static_cast<uint32_t>(valid && b ? b[oc] : 0) -
                        static_cast<uint32_t>(static_cast<uint64_t>(x_offset * wsum));
    bias.push_back(static_cast<int32_t>(bq));
    const int32_t s = valid ? rq.shift[oc] : 0;
    if (s > 0) blocks.back().left = true;
    mult.push_back(valid ? rq.multiplier[oc] : 0);
    lshift.push_back(std::max(s, 0));
    rshift.push_back(std::max(-s, 0));
  }
}

void ConvKernel::Impl::set_view(int cin_gp) {
  ConvView& v = view;
  v.in_h = g.in_h;
  v.in_w = g.in_w;
  v.hp = g.in_h + 2 * g.pad;
  v.wp = g.in_w + 2 * g.pad;
  v.cp = g.groups * cin_gp;
  v.out_h = g.out_h();
  v.out_w = g.out_w();
  v.out_c = g.out_c;
  v.kernel_h = g.kernel_h;
  v.kernel_w = g.kernel_w;
  v.stride = g.stride;
  v.cin_gp = cin_gp;
  v.w = w8.data();
  v.blocks = blocks.data();
  v.n_blocks = static_cast<int>(blocks.size());
  v.bias = bias.data();
  v.mult = mult.data();
  v.lshift = lshift.data();
  v.rshift = rshift.data();
  v.zp_out = rq.zp_out;
  v.act_min = rq.act_min;
  v.act_max = rq.act_max;
  esize = tr.family == Family::s16 ? 2 : 1;
  image_bytes = static_cast<size_t>(v.hp) * v.wp * v.cp * esize;
  v.image_stride = image_bytes;
}

// AMX packing (kernels_internal.h, conv_units_amx): per kernel row, the
// KW * cin_gp bytes of the padded input cut into 64-byte chunks; blocks of
// up to 2 vectors of 16 channels, [chunk][16 k4 rows][vector][16][4].
void ConvKernel::Impl::pack_amx(const int8_t* w, const int32_t* b) {
  const int cin = g.in_c, cin_gp = (cin + 3) / 4 * 4;
  const size_t run = static_cast<size_t>(g.kernel_w) * cin_gp;  // bytes of one kernel row
  const int chunks = static_cast<int>((run + 63) / 64);
  const size_t k_in = static_cast<size_t>(g.kernel_h) * g.kernel_w * cin;
  const int nvec = (g.out_c + 15) / 16;
  for (int v0 = 0; v0 < nvec; v0 += 2) {
    ConvBlock bl;
    bl.nr = std::min(2, nvec - v0);
    bl.oc0 = v0 * 16;
    bl.count = std::min(bl.nr * 16, g.out_c - bl.oc0);
    bl.w_offset = w8.size();
    bl.param = bias.size();
    blocks.push_back(bl);
    const size_t width = static_cast<size_t>(bl.nr) * 16;
    for (int kh = 0; kh < g.kernel_h; ++kh)
      for (int j = 0; j < chunks; ++j)
        for (int r = 0; r < 16; ++r)
          for (size_t lane = 0; lane < width; ++lane)
            for (int t = 0; t < 4; ++t) {
              const size_t byte = static_cast<size_t>(j) * 64 + r * 4 + t;  // within the kernel row
              const size_t kw = byte / cin_gp, c = byte % cin_gp;
              int8_t value = 0;
              if (byte < run && static_cast<int>(c) < cin && static_cast<int>(lane) < bl.count)
                value = w[(static_cast<size_t>(bl.oc0) + lane) * k_in + (kh * g.kernel_w + kw) * cin + c];
              w8.push_back(value);
            }
    set_requant(bl, width, k_in, w, b);
  }
  set_view(cin_gp);
  view.amx_chunks = chunks;
  view.amx_rows = std::min(16, view.out_w);
  view.amx_segs = (view.out_w + view.amx_rows - 1) / view.amx_rows;
  // AMX reads up to 64 bytes past an image (times weight 0): room for them.
  view.image_stride = align_up(image_bytes + 64, kAlign);
  const size_t macs_per_unit = static_cast<size_t>(view.amx_rows) * g.kernel_h * chunks * 64 * nvec * 16;
  grain = std::max<size_t>(4, align_up((size_t{1} << 21) / std::max<size_t>(macs_per_unit, 1), 4));
}

ConvKernel::ConvKernel(const ConvGeometry& g, const int8_t* w, const int32_t* bias, int32_t x_zp, Requant rq, Isa isa)
    : impl_(std::make_unique<Impl>()) {
  validate(g, w, rq);
  if (x_zp < -128 || x_zp > 127) bad("input zero point " + std::to_string(x_zp) + " must be in [-128, 127]");
  if (!isa_supported(isa)) bad(std::string("this CPU (or build) cannot run isa ") + isa_name(isa));
  Impl& k = *impl_;
  k.g = g;
  k.isa = isa;
  k.x_zp = x_zp;
  k.rq = std::move(rq);
  if (isa == Isa::reference) {
    const size_t wn = static_cast<size_t>(g.out_c) * g.kernel_h * g.kernel_w * g.in_c_per_group();
    k.w_ref.assign(w, w + wn);
    k.bias_ref.assign(static_cast<size_t>(g.out_c), 0);
    if (bias) k.bias_ref.assign(bias, bias + g.out_c);
    return;
  }
  k.tr = traits(isa);
  // AMX takes the convolutions whose output rows fill most of a tile;
  // the rest (grouped, fully connected, tiny images) run on AVX-512 VNNI.
  k.amx = isa == Isa::amx && g.groups == 1 && g.out_w() >= 4;
  if (k.amx)
    k.pack_amx(w, bias);
  else
    k.pack(w, bias);
}

ConvKernel::~ConvKernel() = default;
ConvKernel::ConvKernel(ConvKernel&&) noexcept = default;
ConvKernel& ConvKernel::operator=(ConvKernel&&) noexcept = default;

Isa ConvKernel::isa() const { return impl_->isa; }

size_t ConvKernel::scratch_bytes(int batch) const {
  const Impl& k = *impl_;
  if (k.isa == Isa::reference || batch < 1) return 0;
  return static_cast<size_t>(batch) * k.view.image_stride + kAlign;
}

namespace {

// What the pre-pass reads and writes.
struct PrePassCtx {
  const ConvGeometry* g;
  const ConvView* v;
  const int8_t* x;
  uint8_t* xp;
  int32_t x_zp;
};

// The pre-pass of a family: padded row r of image n per index (n * hp + r),
// image n at xp + n * image_stride.
template <Family F>
struct PrePass {

  using T = std::conditional_t<F == Family::s16, int16_t, uint8_t>;
  static T convert(int8_t q, int32_t zp) {
    if constexpr (F == Family::dot_u8) return static_cast<uint8_t>(static_cast<uint8_t>(q) ^ 0x80u);
    if constexpr (F == Family::dot_s8) return static_cast<uint8_t>(q);
    if constexpr (F == Family::s16) return static_cast<int16_t>(q - zp);
  }
  static T pad_value(int32_t zp) {
    if constexpr (F == Family::dot_u8) return static_cast<uint8_t>(zp + 128);
    if constexpr (F == Family::dot_s8) return static_cast<uint8_t>(static_cast<int8_t>(zp));
    if constexpr (F == Family::s16) return 0;
  }

  static void run(const void* ctx, size_t begin, size_t end) {
    const PrePassCtx& p = *static_cast<const PrePassCtx*>(ctx);
    const ConvGeometry& g = *p.g;
    const ConvView& v = *p.v;
    const T padv = pad_value(p.x_zp);
    const int cin_g = g.in_c_per_group();
    for (size_t i = begin; i < end; ++i) {
      const size_t n = i / v.hp;
      const int r = static_cast<int>(i % v.hp);
      T* row = reinterpret_cast<T*>(p.xp + n * v.image_stride) + static_cast<size_t>(r) * v.wp * v.cp;
      const int ih = r - g.pad;
      if (ih < 0 || ih >= g.in_h) {
        std::fill(row, row + static_cast<size_t>(v.wp) * v.cp, padv);
        continue;
      }
      std::fill(row, row + static_cast<size_t>(g.pad) * v.cp, padv);
      std::fill(row + static_cast<size_t>(g.pad + g.in_w) * v.cp, row + static_cast<size_t>(v.wp) * v.cp, padv);
      const int8_t* src = p.x + (n * g.in_h + ih) * static_cast<size_t>(g.in_w) * g.in_c;
      T* dst = row + static_cast<size_t>(g.pad) * v.cp;
      if (v.cp == g.in_c) {
        const size_t m = static_cast<size_t>(g.in_w) * g.in_c;
        size_t j = 0;
        if constexpr (F == Family::dot_s8) {
          std::memcpy(dst, src, m);
          j = m;
        } else if constexpr (F == Family::dot_u8) {
          for (; j + 8 <= m; j += 8) {  // flip the sign bit of 8 bytes at once
            uint64_t word;
            std::memcpy(&word, src + j, 8);
            word ^= 0x8080808080808080ull;
            std::memcpy(dst + j, &word, 8);
          }
        }
        for (; j < m; ++j) dst[j] = convert(src[j], p.x_zp);
      } else {
        for (int col = 0; col < g.in_w; ++col)
          for (int grp = 0; grp < g.groups; ++grp) {
            const int8_t* s = src + static_cast<size_t>(col) * g.in_c + grp * cin_g;
            T* d = dst + static_cast<size_t>(col) * v.cp + static_cast<size_t>(grp) * v.cin_gp;
            for (int c = 0; c < cin_g; ++c) d[c] = convert(s[c], p.x_zp);
            for (int c = cin_g; c < v.cin_gp; ++c) d[c] = padv;
          }
      }
    }
  }
};

struct RunCtx {
  PrePassCtx prepass;
  void (*tiles)(const ConvView&, const uint8_t*, int8_t*, size_t, size_t);
  const uint8_t* xp;
  int8_t* y;
};

struct RefCtx {
  const ConvGeometry* g;
  const int8_t* x;
  const int8_t* w;
  const int32_t* bias;
  int32_t x_zp;
  const Requant* rq;
  int8_t* y;
  size_t x_img, y_img;
};

}  // namespace

void ConvKernel::run(int batch, const int8_t* x, int8_t* y, std::span<std::byte> scratch) const {
  const Impl& k = *impl_;
  if (batch < 1 || batch > k.g.batch)
    bad("run: batch " + std::to_string(batch) + " outside [1, " + std::to_string(k.g.batch) + "]");
  if (k.isa == Isa::reference) {
    const RefCtx ctx{&k.g,
                     x,
                     k.w_ref.data(),
                     k.bias_ref.data(),
                     k.x_zp,
                     &k.rq,
                     y,
                     static_cast<size_t>(k.g.in_h) * k.g.in_w * k.g.in_c,
                     static_cast<size_t>(k.g.out_h()) * k.g.out_w() * k.g.out_c};
    parallel_for(static_cast<size_t>(batch), 1, &ctx, [](const void* c, size_t b, size_t e) {
      const RefCtx& p = *static_cast<const RefCtx*>(c);
      ConvGeometry g = *p.g;
      g.batch = static_cast<int>(e - b);
      conv2d_ref(g, p.x + b * p.x_img, p.x_zp, p.w, p.bias, *p.rq, p.y + b * p.y_img);
    });
    return;
  }
  if (scratch.size() < scratch_bytes(batch))
    bad("run: scratch of " + std::to_string(scratch.size()) + " bytes, needs " + std::to_string(scratch_bytes(batch)));
  const size_t misalign = reinterpret_cast<uintptr_t>(scratch.data()) % kAlign;
  uint8_t* xp = reinterpret_cast<uint8_t*>(scratch.data()) + (misalign ? kAlign - misalign : 0);

  // The pre-pass of the family, and the tile loop: over pixels, or AMX units.
  void (*pre)(const void*, size_t, size_t) = k.tr.family == Family::dot_u8   ? PrePass<Family::dot_u8>::run
                                             : k.tr.family == Family::dot_s8 ? PrePass<Family::dot_s8>::run
                                                                             : PrePass<Family::s16>::run;
  void (*tiles)(const ConvView&, const uint8_t*, int8_t*, size_t, size_t) = k.tr.pixels;
  size_t per_image = static_cast<size_t>(k.view.out_h) * k.view.out_w;  // work items per image
  if (k.amx) {
#if defined(__x86_64__)
    tiles = detail::conv_units_amx;
#endif
    per_image = static_cast<size_t>(k.view.out_h) * k.view.amx_segs;
  }
  const RunCtx ctx{{&k.g, &k.view, x, xp, k.x_zp}, tiles, xp, y};

  // The pre-pass of the batch, then its convolution, each split over the
  // threads. (Pre-passing and convolving one image per task, for the cache,
  // measured 10% slower on ResNet-20 at batch 100.)
  const size_t rows = static_cast<size_t>(batch) * k.view.hp;
  const size_t row_grain = std::max<size_t>(1, 16384 / std::max<size_t>(1, k.image_bytes / k.view.hp));
  parallel_for(rows, row_grain, &ctx.prepass, pre);
  parallel_for(static_cast<size_t>(batch) * per_image, k.grain, &ctx, [](const void* c, size_t b, size_t e) {
    const RunCtx& r = *static_cast<const RunCtx*>(c);
    r.tiles(*r.prepass.v, r.xp, r.y, b, e);
  });
}

}  // namespace octet::engine
