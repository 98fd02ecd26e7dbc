// engine/builder.h: the writer of the Octet model file (docs/format.md):
// ModelBuilder, which assembles a model from integer weights and float scales
// (the multipliers are derived with QuantizeMultiplier, in double, offline)
// and stores it atomically, and the byte-level encoder under it. A program
// that only loads and runs models needs engine/engine.h (engine/format.h), not
// this header. Defined in engine/format_write.cpp.
//
//   ModelBuilder b("resnet20");
//   TensorId x = b.add_input("image", 32, 32, 3, 1.0 / 255, 0);
//   x = b.add_conv("stem", x, weights, bias, {.stride = 1, .pad = 1}, {.scale = 0.05}, Act::relu);
//   x = b.add_conv("c2", x, weights2, bias2, {.pad = 1}, {.scale = 0.05}, Clamp(-8, 7));  // a 4-bit grid
//   ...
//   b.set_output(b.add_fc("fc", x, fc_weights, fc_bias, {.scale = 0.1}));
//   b.write("model.oct");
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/fixedpoint.h"
#include "engine/format.h"

namespace octet::engine {

// ---- bytes ------------------------------------------------------------------

// Encodes a model as it is, without the graph checks (the tests and the fuzz
// corpus build malformed files with it). Throws std::invalid_argument only for
// what the format cannot represent (a value outside its bitwidth, a count
// above 2^32, data on an activation).
std::vector<uint8_t> encode(const ModelDesc& model);

// Writes bytes to path atomically: a temporary file in the same directory,
// flushed, then renamed over path. Throws FormatError(io) on failure.
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

// b-bit two's complement packing (engine/format.h, unpack_bits): values must
// lie in [-2^(b-1), 2^(b-1) - 1] (std::invalid_argument otherwise).
std::vector<uint8_t> pack_bits(std::span<const int8_t> values, int bits);

// ---- the model builder ------------------------------------------------------

enum class Act { none, relu, relu6 };

// The clamp of an op's output codes, in its dtype's domain: either a fused
// activation (Act; its bounds are activation_bounds below) or explicit
// bounds, e.g. a sub-8-bit grid's [qmin, qmax] raised to the zero point under
// a ReLU (quant/export.cpp). Converts from Act, so `Act::relu` is a Clamp and
// callers that pass an Act (or nothing: Act::none) get today's bounds.
// Explicit bounds are stored as given; serialize() (the reader) checks them.
struct Clamp {
  Clamp(Act a = Act::none) : act(a) {}  // implicit on purpose
  Clamp(int32_t lo, int32_t hi) : bounds(std::pair<int32_t, int32_t>{lo, hi}) {}
  Act act = Act::none;
  std::optional<std::pair<int32_t, int32_t>> bounds;  // set: used as is, `act` ignored
};

// An activation tensor of the builder's model: its index in the tensor table
// (ModelDesc::tensors). Not octet::Tensor, the float tensor of core/.
struct TensorId {
  uint32_t id = 0;
};

// Quantization of an op's output. uint8 outputs are allowed (unsigned
// activations); logits must be int8.
struct OutQuant {
  double scale = 1.0;
  int32_t zero_point = 0;
  DType dtype = DType::int8;
};

// Integer weights, symmetric (zero point 0), per output channel scales.
//   conv2d: values [out_c][kernel_h][kernel_w][in_c / groups]
//   fc:     values [out_c][K] with K = the flattened input (H*W*C, HWC order)
struct Weights {
  std::vector<int8_t> values;  // each in [-2^(bits-1), 2^(bits-1) - 1]
  int out_c = 0, kernel_h = 1, kernel_w = 1, in_c = 0;  // in_c: per group (conv) or K (fc)
  std::vector<double> scales;  // [out_c], or one scale for the whole tensor
  int bits = 8;                // storage bitwidth, 2..8
};

struct ConvParams {
  int stride = 1, pad = 0, groups = 1;
};

class ModelBuilder {
 public:
  explicit ModelBuilder(std::string model_name = "");

  // The graph input (uint8 pixels [h,w,c], real = scale * (pixel - zero_point))
  // and the input op; returns the int8 tensor the first layer reads.
  TensorId add_input(const std::string& name, int h, int w, int c, double scale, int32_t zero_point);

  // requantize: multiplier[c] = QuantizeMultiplier(s_in * s_w[c] / s_out);
  // bias (empty = zeros) is int32 at scale s_in * s_w[c]. The output is
  // clamped to activation_bounds(clamp, out). `multipliers`, if given,
  // replaces the computed ones (e.g. to match an integer simulation).
  TensorId add_conv(const std::string& name, TensorId x, const Weights& w, std::vector<int32_t> bias,
                    ConvParams p, OutQuant out, Clamp clamp = Act::none,
                    std::optional<std::vector<QuantizedMultiplier>> multipliers = std::nullopt);
  TensorId add_fc(const std::string& name, TensorId x, const Weights& w, std::vector<int32_t> bias, OutQuant out,
                  Clamp clamp = Act::none, std::optional<std::vector<QuantizedMultiplier>> multipliers = std::nullopt);

  // y = a + b in real terms (TFLite's scheme, left_shift 20): both inputs are
  // brought to 2*max(s_a, s_b) / 2^20, summed, requantized to `out` and
  // clamped to activation_bounds(clamp, out).
  TensorId add_add(const std::string& name, TensorId a, TensorId b, OutQuant out, Clamp clamp = Act::none);

  enum class Pool { max, avg };
  // Output keeps the input's dtype, scale and zero point.
  TensorId add_pool(const std::string& name, TensorId x, Pool kind, int kernel, int stride, int pad = 0);
  TensorId add_global_avg_pool(const std::string& name, TensorId x);  // [H,W,C] -> [C]

  void set_output(TensorId logits);
  void set_metadata(const std::string& key, const std::string& value);  // replaces an existing key
  void set_class_names(const std::vector<std::string>& names);        // "class_names", one per line
  void set_preprocessing(const std::string& description);             // "preprocessing"

  // Encodes and then decodes the result, so a model that the reader would
  // reject is never produced (throws FormatError naming the op).
  std::vector<uint8_t> serialize() const;
  void write(const std::string& path) const;  // serialize() + write_file_atomic

  const ModelDesc& desc() const { return desc_; }
  ModelDesc& mutable_desc() { return desc_; }  // for tools that need a raw edit
  // Shape of an activation tensor ([H,W,C] or [C]).
  const std::vector<int64_t>& shape(TensorId t) const;

 private:
  uint32_t add_tensor(TensorDesc t);
  uint32_t add_const_i32(const std::string& name, std::vector<int32_t> values);
  const TensorDesc& activation(TensorId t, const std::string& op) const;
  TensorId add_matmul_like(OpType type, const std::string& name, TensorId x, const Weights& w,
                           std::vector<int32_t> bias, ConvParams p, OutQuant out, const Clamp& clamp,
                           std::optional<std::vector<QuantizedMultiplier>> m);
  ModelDesc desc_;
  bool have_output_ = false;
};

// Clamp bounds of an op's output in the dtype's own domain: explicit bounds
// as given; otherwise by the Act (none: the dtype's range; relu: [zp, max];
// relu6: [zp, min(max, zp + round(6 / scale))]).
std::pair<int32_t, int32_t> activation_bounds(const Clamp& clamp, const OutQuant& out);

}  // namespace octet::engine
