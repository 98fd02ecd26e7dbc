// engine/kernels_internal.h: what a prepared convolution hands to the
// ISA-specific tile loops (engine/kernels_avx2.cpp, kernels_avx512.cpp,
// kernels_neon.cpp, kernels_neon_dot.cpp), and the tile loop they share
// (conv_pixels below). Plain data, and `static` helpers: those files are
// compiled with their ISA's flags, so they must not instantiate any inline or
// template code that other files share (the linker could keep their AVX-512
// copy for everyone); a static function (template) is each file's own copy.
//
// The scheme, for every ISA: the input of a batch is first copied into a
// padded image xp [N][H+2p][W+2p][groups * cin_gp] ("pre-pass"), the padding
// filled with the value that stands for x_zp, each group's channels padded to
// cin_gp (a multiple of the ISA's k step; the padded channels have weight 0).
// The convolution is then a GEMM without im2col: output pixel p, tap (kh, kw)
// and channel c read xp at base(p) + (kh * Wp + kw) * Cp + c, so the K loop of
// one pixel walks KH*KW contiguous runs of cin_gp values.
//
// Families (what the pre-pass stores, how the weights are packed):
//   dot_u8  (AVX-512 VNNI vpdpbusd, u8 x s8): xp = x + 128 as uint8, padding
//           x_zp + 128. sum (x - x_zp) w = sum xp w - (x_zp + 128) sum w, so
//           bias' = bias - (x_zp + 128) * sum_k w[c][k] (int32, wrapping: the
//           true accumulator fits, so the wrapped intermediate sums are exact).
//   dot_s8  (NEON sdot, s8 x s8): xp = x, padding x_zp; bias' = bias - x_zp * sum w.
//   s16     (AVX2 vpmaddwd, NEON smlal): xp = x - x_zp as int16, padding 0; bias' = bias.
// Packed weights, one block of nr vectors of `lanes` output channels of one
// group: for each k step kk: for each vector v: for each lane l: for j < kstep:
//   w[oc0 + v * lanes + l][kk * kstep + j]   (0 beyond the group's channels)
// with k = (kh * KW + kw) * cin_gp + c, as int8 for every family (the s16 tiles
// widen them to int16 as they load them: half the bytes in cache, and a
// session holds its weights in the file's size).
#pragma once

#include <cstddef>
#include <cstdint>

namespace octet::engine::detail {

// One block of output channels: [oc0, oc0 + count) of group `group`, packed
// as nr vectors; its per-lane parameters start at index `param` of the
// ConvView arrays (nr * lanes entries; lanes past count are padding).
struct ConvBlock {
  int group = 0;
  int oc0 = 0;
  int count = 0;
  int nr = 1;
  size_t w_offset = 0;  // in int8 elements of ConvView::w
  size_t param = 0;
  bool left = false;  // some lane has a shift > 0 (a left shift to saturate)
};

struct ConvView {
  // geometry
  int in_h = 0, in_w = 0;         // unpadded input
  int hp = 0, wp = 0, cp = 0;     // padded input rows: [hp][wp][cp], cp = groups * cin_gp
  int out_h = 0, out_w = 0, out_c = 0;
  int kernel_h = 0, kernel_w = 0, stride = 1;
  int cin_gp = 0;                 // padded channels per group
  size_t image_stride = 0;        // bytes from one padded image to the next (AMX: + slack)
  // packed weights and blocks
  const void* w = nullptr;        // int8_t, every family
  const ConvBlock* blocks = nullptr;
  int n_blocks = 0;
  // per-lane requantization (indexed by ConvBlock::param + v * lanes + l)
  const int32_t* bias = nullptr;  // bias' (with the family's zero-point correction)
  const int32_t* mult = nullptr;
  const int32_t* lshift = nullptr;  // max(shift, 0)
  const int32_t* rshift = nullptr;  // max(-shift, 0)
  int32_t zp_out = 0, act_min = -128, act_max = 127;
  // AMX (groups == 1 only): see conv_units_amx.
  int amx_chunks = 0;  // 64-byte K chunks per kernel row
  int amx_rows = 0;    // pixels per A tile: min(16, out_w)
  int amx_segs = 0;    // A tiles per output row: ceil(out_w / amx_rows)
};

// Computes output pixels [p0, p1) (numbered n * OH * OW + oh * OW + ow over
// the batch) for every block: xp is the padded input, y the [N,OH,OW,Cout]
// output. Each exists only in a build for its architecture; each is its
// file's conv_pixels<Kernel> (below).
void conv_pixels_avx2(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1);
void conv_pixels_avx512_vnni(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1);
// AMX-INT8 (family dot_u8 with its own K layout). The K of one kernel row kh
// is the KW * cin_gp bytes xp[oh*s + kh][ow*s .. ow*s + KW)[all channels],
// contiguous in the padded input when groups == 1, cut into amx_chunks chunks
// of 64 bytes (an A tile row); weights past KW * cin_gp are 0, so the bytes
// read beyond (the next pixel's, or 64 bytes of slack after the last image)
// add nothing. k = (kh * amx_chunks + j) * 64 + byte; a block holds <= 2
// vectors, packed [chunk][16 k4 rows][vector][16 lanes][4].
// A "unit" is amx_rows consecutive output pixels of one output row (the last
// unit of a row is moved left to end at the row's end and stores only the
// pixels the previous unit did not): units [u0, u1) of the batch, numbered
// (n * OH + oh) * amx_segs + segment.
void conv_units_amx(const ConvView& v, const uint8_t* xp, int8_t* y, size_t u0, size_t u1);
void conv_pixels_neon(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1);
void conv_pixels_neon_dot(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1);

// Output pixels [p0, p1) (numbered as for conv_pixels_*) in tiles of up to MR:
// calls tile(m, base, out) with the tile's m pixels' window origins in xp
// (the input of block b's group at (oh * stride, ow * stride) of image n) and
// their output pointers (channel b.oc0). The position (n, oh, ow) is carried
// from pixel to pixel rather than divided out of the pixel number: three
// divisions per pixel cost as much as the multiply-adds of a 16-channel layer.
template <int MR, typename T, typename Tile>
static inline void for_each_pixel_tile(const ConvView& v, const ConvBlock& b, const T* xp, int8_t* y, size_t p0,
                                       size_t p1, Tile&& tile) {
  const size_t ohw = static_cast<size_t>(v.out_h) * v.out_w;
  if (p0 >= p1 || ohw == 0) return;
  const size_t group_off = static_cast<size_t>(b.group) * v.cin_gp;
  const size_t row = static_cast<size_t>(v.wp) * v.cp, image = static_cast<size_t>(v.hp) * row;
  const size_t step = static_cast<size_t>(v.stride) * v.cp, row_step = static_cast<size_t>(v.stride) * row;
  size_t n = p0 / ohw, oh = p0 % ohw / v.out_w, ow = p0 % ohw % v.out_w;
  size_t row_base = n * image + oh * row_step + group_off;  // the window origin of (n, oh, 0)
  const T* base[MR];
  int8_t* out[MR];
  for (size_t p = p0; p < p1; p += MR) {
    const int m = p1 - p < MR ? static_cast<int>(p1 - p) : MR;
    for (int i = 0; i < m; ++i) {
      base[i] = xp + row_base + ow * step;
      out[i] = y + (p + i) * v.out_c + b.oc0;
      if (++ow == static_cast<size_t>(v.out_w)) {
        ow = 0;
        if (++oh == static_cast<size_t>(v.out_h)) {
          oh = 0;
          ++n;
        }
        row_base = n * image + oh * row_step + group_off;
      }
    }
    tile(m, base, out);
  }
}

// The tile loop of an ISA's conv_pixels_*, the same for every ISA up to its
// micro-kernel K, a struct in the ISA file's anonymous namespace:
//   struct K {
//     using T = ...;                       // element of xp: uint8_t (dot families) or int16_t (s16)
//     static constexpr int kMr[] = {...};  // MR (pixels per tile) for nr = 1, 2, ..;
//                                          // a block of more vectors takes the last
//     template <int MR, int NR>            // MR pixels (window origins, outputs) x NR vectors
//     static void tile(const ConvView& v, const ConvBlock& b, const T* const* base, int8_t* const* out);
//   };
// conv_pixels<K>(v, xp, y, p0, p1) computes output pixels [p0, p1) of every
// block (as conv_pixels_* do) in tiles of MR x b.nr: K::tile<MR, nr>, and for
// the last m < MR pixels K::tile<m, nr>. Every function here is `static` and
// K's type is local to its file, so each ISA file instantiates its own copy,
// compiled with its own flags, and no instantiation is shared between files.
// tile_m and block_pixels are not declared inline, as when each file had its
// own copy, so that the compiler's inlining of the tile loop stays as it was.

// K::tile<m, NR> for a run-time m in [1, M].
template <typename K, int NR, int M>
static void tile_m(int m, const ConvView& v, const ConvBlock& b, const typename K::T* const* base, int8_t* const* out) {
  if constexpr (M >= 1) {
    if (m == M)
      K::template tile<M, NR>(v, b, base, out);
    else
      tile_m<K, NR, M - 1>(m, v, b, base, out);
  }
}

// Block b's pixels [p0, p1) in tiles of MR pixels x NR vectors.
template <typename K, int NR, int MR>
static void block_pixels(const ConvView& v, const ConvBlock& b, const typename K::T* xp, int8_t* y, size_t p0,
                         size_t p1) {
  using T = typename K::T;
  for_each_pixel_tile<MR>(v, b, xp, y, p0, p1, [&](int m, const T* const* base, int8_t* const* out) {
    if (m == MR)
      K::template tile<MR, NR>(v, b, base, out);
    else
      tile_m<K, NR, MR - 1>(m, v, b, base, out);
  });
}

// block_pixels<K, nr, K::kMr[nr - 1]> for a run-time nr >= NR (nr beyond
// kMr: the last entry's).
template <typename K, int NR>
static inline void block_pixels_nr(int nr, const ConvView& v, const ConvBlock& b, const typename K::T* xp, int8_t* y,
                                   size_t p0, size_t p1) {
  constexpr int kNrMax = static_cast<int>(sizeof(K::kMr) / sizeof(K::kMr[0]));
  static_assert(NR >= 1 && NR <= kNrMax);
  if constexpr (NR < kNrMax) {
    if (nr == NR)
      block_pixels<K, NR, K::kMr[NR - 1]>(v, b, xp, y, p0, p1);
    else
      block_pixels_nr<K, NR + 1>(nr, v, b, xp, y, p0, p1);
  } else {
    block_pixels<K, NR, K::kMr[NR - 1]>(v, b, xp, y, p0, p1);
  }
}

template <typename K>
static inline void conv_pixels(const ConvView& v, const uint8_t* xp, int8_t* y, size_t p0, size_t p1) {
  const typename K::T* x = reinterpret_cast<const typename K::T*>(xp);
  for (int i = 0; i < v.n_blocks; ++i) {
    const ConvBlock& b = v.blocks[i];
    block_pixels_nr<K, 1>(b.nr, v, b, x, y, p0, p1);
  }
}

// AddParams of engine/kernels.h as plain data; y = the add of a and b, n elements.
struct AddParamsView {
  int32_t a_zp, b_zp, left_shift, a_mult, b_mult, out_mult, a_shift, b_shift, out_shift;
  int32_t zp_out, act_min, act_max;
};
void add_avx2(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y);
void add_avx512(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y);
void add_neon(size_t n, const int8_t* a, const int8_t* b, const AddParamsView& p, int8_t* y);

}  // namespace octet::engine::detail
