// engine/engine.h: the public API of Octet's integer-only inference engine.
//
//   auto model = octet::engine::Model::load("resnet20.oct");   // validates everything
//   octet::engine::Session s(model, /*max_batch=*/100);         // plans one arena, prepares kernels
//   std::span<const int8_t> logits = s.run(pixels, batch);      // uint8 NHWC in, int8 [batch, classes] out
//   for (auto [cls, q] : octet::engine::top_k(logits.first(model->num_classes()), 5)) ...
//
// A Model is immutable and can be shared by any number of Sessions (one per
// thread). It prepares each conv/fc kernel (weights packed for an
// instruction set) once, on the first Session that needs it, and its Sessions
// share them. A Session owns ONE arena holding every activation and every
// kernel's scratch; activations whose lifetimes do not overlap share memory
// (greedy by size). run() allocates nothing and uses no floating point: it is the integer
// contract of engine/fixedpoint.h and engine/kernels.h, op after op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/format.h"
#include "engine/kernels.h"

namespace octet::engine {

struct ModelOptions {
  // Inference only: prepare every conv/fc kernel for `isa` while loading and
  // then free the weights' int8 codes held in desc(), so the model holds its
  // weights once, packed, instead of twice (the C API opens models so). The
  // weight tensors of desc() are then empty, and a Session for another isa
  // is refused.
  bool inference_only = false;
  Isa isa = best_isa();
};

class Model {
 public:
  // Reads and validates a model file; throws FormatError.
  static std::shared_ptr<const Model> load(const std::string& path, const ModelOptions& options = {});
  static std::shared_ptr<const Model> from_bytes(std::span<const uint8_t> bytes, const std::string& name = "<memory>",
                                                 const ModelOptions& options = {});
  ~Model();

  const ModelDesc& desc() const { return desc_; }
  const std::string& source() const { return source_; }  // the path or the name given to from_bytes
  std::string name() const;                              // metadata model_name, else source()

  int input_h() const { return in_h_; }
  int input_w() const { return in_w_; }
  int input_c() const { return in_c_; }
  size_t input_bytes() const { return static_cast<size_t>(in_h_) * in_w_ * in_c_; }  // per image
  int num_classes() const { return classes_; }

  // The logits' real value scale * (q - zero_point), for display only: the
  // engine itself never uses a scale.
  double logit_real(int8_t q) const;
  std::vector<std::string> class_names() const;  // empty if the file has none
  std::string metadata(const std::string& key) const;  // "" if absent

  uint64_t macs_per_image() const { return macs_; }                       // conv + fc multiply-adds
  uint64_t op_macs(size_t op) const { return op_macs_.at(op); }           // of one op (ModelDesc::ops order), per image
  uint64_t activation_bytes_per_image() const { return act_bytes_; }      // sum over activations, no sharing
  uint64_t weight_bytes_stored() const { return stored_weight_bytes_; }   // packed, as in the file

  // The prepared kernel of conv/fc op `op` (ModelDesc::ops order) for `isa`:
  // made on the first call, then shared (thread-safe). Throws
  // std::invalid_argument for another op type, or for an isa the weights
  // were not kept for (ModelOptions::inference_only).
  std::shared_ptr<const ConvKernel> kernel(size_t op, Isa isa) const;
  bool inference_only() const { return inference_only_; }

 private:
  Model(ModelDesc desc, std::string source, const ModelOptions& options);
  struct Kernels;
  ModelDesc desc_;
  std::unique_ptr<Kernels> kernels_;
  bool inference_only_ = false;
  Isa inference_isa_ = Isa::reference;
  std::string source_;
  int in_h_ = 0, in_w_ = 0, in_c_ = 0, classes_ = 0;
  uint64_t macs_ = 0, act_bytes_ = 0, stored_weight_bytes_ = 0;
  std::vector<uint64_t> op_macs_;
};

class Session {
 public:
  // Prepares every conv/fc kernel for batches up to max_batch and plans the
  // arena. Throws std::invalid_argument for max_batch < 1 or an arena that
  // does not fit size_t.
  Session(std::shared_ptr<const Model> model, int max_batch, Isa isa = best_isa());
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // pixels: batch images of input_h x input_w x input_c uint8, NHWC.
  // Returns int8 logits [batch, num_classes], valid until the next run().
  // Allocates nothing; throws std::invalid_argument for a bad batch.
  std::span<const int8_t> run(const uint8_t* pixels_nhwc, int batch);

  const Model& model() const;
  int max_batch() const;
  Isa isa() const;
  size_t arena_bytes() const;     // the one arena: activations + scratch, shared where lifetimes allow
  size_t unshared_bytes() const;  // what the same buffers would take without sharing

  // Op profiling, like TFLite benchmark_model's --enable_op_profiling: while
  // on, run() reads a steady clock around every op and adds the op's wall
  // time to its total. Switching it on clears the totals; off (the default),
  // run() reads no clock. Totals are integer nanoseconds.
  struct Profile {
    std::vector<uint64_t> op_ns;  // per model op, ModelDesc::ops order
    uint64_t runs = 0;            // run() calls counted
    uint64_t images = 0;          // images those calls ran
  };
  void set_profiling(bool on);
  const Profile& profile() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The profile as a table, one row per op: type, name, output shape, multiply-
// adds per image, wall time per image, share of the total and GMAC/s. For
// display (it uses floating point; run() does not).
std::string profile_table(const Model& model, const Session::Profile& profile);

struct Scored {
  int index = 0;     // class
  int8_t value = 0;  // the int8 logit
};
// The k largest entries, largest first; equal values are ordered by index
// (the lowest index first). k is clamped to the row's size.
std::vector<Scored> top_k(std::span<const int8_t> row, int k);
// Index of the largest entry, the lowest index among equals; -1 if empty.
int argmax(std::span<const int8_t> row);

}  // namespace octet::engine
