// engine/engine.cpp: Model (a validated model file), the arena planner
// (engine/plan.h) and Session, the executor. Every op of a decoded model is
// already proven well-formed (engine/format_validate.cpp), so this file only
// translates the file's tensors into the kernels' terms (engine/kernels.h):
// uint8 tensors become the int8 carry (zero point - 128, clamps - 128,
// engine/format.h carry_offset), fully connected becomes a 1x1 conv of a
// [1, 1, K] input.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <numeric>
#include <stdexcept>

#include "engine/plan.h"

namespace octet::engine {

namespace {

int32_t carry_zp(const TensorDesc& t) { return t.zero_point - carry_offset(t.dtype); }

size_t checked_mul(size_t a, size_t b, const char* what) {
  if (a != 0 && b > std::numeric_limits<size_t>::max() / 4 / a)
    throw std::invalid_argument(std::string("Session: ") + what + " does not fit in memory");
  return a * b;
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// ---- chunked calls of the reference kernels through the engine's threads ------

struct InputCtx {
  const uint8_t* px;
  int8_t* y;
};
void input_chunk(const void* c, size_t begin, size_t end) {
  const auto& p = *static_cast<const InputCtx*>(c);
  input_u8_ref(end - begin, p.px + begin, p.y + begin);
}

struct AddCtx {
  const int8_t *a, *b;
  const AddParams* params;
  int8_t* y;
  Isa isa;  // the session's: add_fast equals add_ref bit for bit on every ISA
};
void add_chunk(const void* c, size_t begin, size_t end) {
  const auto& p = *static_cast<const AddCtx*>(c);
  add_fast(end - begin, p.a + begin, p.b + begin, *p.params, p.y + begin, p.isa);
}

// One image per index: [N,H,W,C] -> [N,OH,OW,C] (or [N,C] for the global pool).
struct PoolCtx {
  OpType type;
  const ConvGeometry* g;
  const int8_t* x;
  int8_t* y;
  size_t x_elems, y_elems;  // per image
};
void pool_chunk(const void* c, size_t begin, size_t end) {
  const auto& p = *static_cast<const PoolCtx*>(c);
  ConvGeometry g = *p.g;
  g.batch = static_cast<int>(end - begin);
  const int8_t* x = p.x + begin * p.x_elems;
  int8_t* y = p.y + begin * p.y_elems;
  switch (p.type) {
    case OpType::max_pool: max_pool_ref(g, x, y); break;
    case OpType::avg_pool: avg_pool_ref(g, x, y); break;
    default: global_avg_pool_ref(g.batch, g.in_h * g.in_w, g.in_c, x, y); break;
  }
}

constexpr size_t kElementGrain = 16384;
constexpr size_t kArenaAlign = 64;

}  // namespace

// ---- Model ----------------------------------------------------------------------

std::shared_ptr<const Model> Model::load(const std::string& path, const ModelOptions& options) {
  return std::shared_ptr<const Model>(new Model(read_model_file(path), path, options));
}

std::shared_ptr<const Model> Model::from_bytes(std::span<const uint8_t> bytes, const std::string& name,
                                               const ModelOptions& options) {
  return std::shared_ptr<const Model>(new Model(decode(bytes, name), name, options));
}

// The prepared kernels, one slot per op and isa, filled on first use.
struct Model::Kernels {
  std::mutex mutex;
  std::map<std::pair<size_t, Isa>, std::shared_ptr<const ConvKernel>> made;
};

Model::~Model() = default;

Model::Model(ModelDesc desc, std::string source, const ModelOptions& options)
    : desc_(std::move(desc)), kernels_(std::make_unique<Kernels>()), source_(std::move(source)) {
  const TensorDesc& in = desc_.tensors[desc_.input];
  in_h_ = static_cast<int>(in.shape[0]);
  in_w_ = static_cast<int>(in.shape[1]);
  in_c_ = static_cast<int>(in.shape[2]);
  classes_ = static_cast<int>(desc_.tensors[desc_.output].numel());
  for (const OpDesc& op : desc_.ops) {
    act_bytes_ += static_cast<uint64_t>(desc_.tensors[op.output].numel());
    uint64_t macs = 0;
    if (op.type == OpType::conv2d || op.type == OpType::fully_connected) {
      const TensorDesc& w = desc_.tensors[op.inputs[1]];
      const uint64_t k = static_cast<uint64_t>(w.numel() / w.shape[0]);
      const uint64_t outputs = static_cast<uint64_t>(desc_.tensors[op.output].numel());
      macs = outputs * k;
    }
    op_macs_.push_back(macs);
    macs_ += macs;
  }
  for (const TensorDesc& t : desc_.tensors)
    if (t.constant) stored_weight_bytes_ += t.dtype == DType::int8 ? packed_size(t.i8.size(), t.bits) : 4 * t.i32.size();

  if (options.inference_only) {
    // Each kernel, then at once its unpacked codes go (the next kernel's
    // packing reuses their memory): the weights never exist twice in full.
    for (size_t i = 0; i < desc_.ops.size(); ++i) {
      const OpDesc& op = desc_.ops[i];
      if (op.type != OpType::conv2d && op.type != OpType::fully_connected) continue;
      kernel(i, options.isa);
      std::vector<int8_t>().swap(desc_.tensors[op.inputs[1]].i8);
    }
    inference_only_ = true;
    inference_isa_ = options.isa;
  }
}

std::shared_ptr<const ConvKernel> Model::kernel(size_t op_index, Isa isa) const {
  if (op_index >= desc_.ops.size())
    throw std::invalid_argument("Model::kernel: op " + std::to_string(op_index) + " of " +
                                std::to_string(desc_.ops.size()));
  const OpDesc& op = desc_.ops[op_index];
  if (op.type != OpType::conv2d && op.type != OpType::fully_connected)
    throw std::invalid_argument("Model::kernel: op " + std::to_string(op_index) + " is a " + op_name(op.type) +
                                ", not a conv2d or fully_connected");
  std::lock_guard<std::mutex> lock(kernels_->mutex);
  std::shared_ptr<const ConvKernel>& slot = kernels_->made[{op_index, isa}];
  if (slot) return slot;
  if (inference_only_)
    throw std::invalid_argument(source_ + ": opened for inference on isa " + isa_name(inference_isa_) +
                                " (its unpacked weights are freed); a session for isa " + isa_name(isa) +
                                " needs a model loaded without ModelOptions::inference_only");
  const TensorDesc& x = desc_.tensors[op.inputs[0]];
  const TensorDesc& w = desc_.tensors[op.inputs[1]];
  const TensorDesc& y = desc_.tensors[op.output];
  const auto& p = op.params;
  ConvGeometry g;
  g.batch = std::numeric_limits<int>::max();  // any batch: a Session checks its own maximum
  g.out_c = static_cast<int>(w.shape[0]);
  const bool conv = op.type == OpType::conv2d;
  if (conv) {
    g.in_h = static_cast<int>(x.shape[0]);
    g.in_w = static_cast<int>(x.shape[1]);
    g.in_c = static_cast<int>(x.shape[2]);
    g.kernel_h = static_cast<int>(w.shape[1]);
    g.kernel_w = static_cast<int>(w.shape[2]);
    g.stride = p[param::kStride];
    g.pad = p[param::kPad];
    g.groups = p[param::kGroups];
  } else {
    g.in_c = static_cast<int>(x.numel());
  }
  const int32_t off = carry_offset(y.dtype);
  Requant rq;
  rq.multiplier = desc_.tensors[op.inputs[3]].i32;
  rq.shift = desc_.tensors[op.inputs[4]].i32;
  rq.zp_out = carry_zp(y);
  rq.act_min = p[conv ? param::kConvActMin : param::kFcActMin] - off;
  rq.act_max = p[conv ? param::kConvActMax : param::kFcActMax] - off;
  slot = std::make_shared<const ConvKernel>(g, w.i8.data(), desc_.tensors[op.inputs[2]].i32.data(), carry_zp(x),
                                            std::move(rq), isa);
  return slot;
}

std::string Model::name() const {
  const std::string* n = desc_.find_metadata("model_name");
  return n && !n->empty() ? *n : source_;
}

double Model::logit_real(int8_t q) const {
  const TensorDesc& out = desc_.tensors[desc_.output];
  return out.scale * (static_cast<int32_t>(q) - out.zero_point);
}

std::vector<std::string> Model::class_names() const {
  std::vector<std::string> names;
  const std::string* all = desc_.find_metadata("class_names");
  if (!all || all->empty()) return names;
  // One name per line; a final newline ends the last name, as getline reads it.
  size_t at = 0;
  while (at < all->size()) {
    const size_t end = std::min(all->find('\n', at), all->size());
    names.emplace_back(*all, at, end - at);
    at = end + 1;
  }
  if (all->back() == '\n') names.emplace_back();
  return names;
}

std::string Model::metadata(const std::string& key) const {
  const std::string* v = desc_.find_metadata(key);
  return v ? *v : std::string();
}

// ---- the arena planner --------------------------------------------------------------

std::vector<size_t> plan_arena(const std::vector<Lifetime>& buffers, size_t align, size_t* total) {
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (buffers[a].bytes != buffers[b].bytes) return buffers[a].bytes > buffers[b].bytes;
    return buffers[a].first < buffers[b].first;
  });
  std::vector<size_t> offsets(buffers.size(), 0);
  std::vector<size_t> placed;
  std::vector<std::pair<size_t, size_t>> conflicts;  // [offset, end) of placed buffers alive at the same time
  size_t arena = 0;
  for (size_t i : order) {
    const Lifetime& b = buffers[i];
    if (b.bytes == 0) continue;
    conflicts.clear();
    for (size_t j : placed) {
      const Lifetime& o = buffers[j];
      if (o.first <= b.last && b.first <= o.last) conflicts.emplace_back(offsets[j], offsets[j] + o.bytes);
    }
    std::sort(conflicts.begin(), conflicts.end());
    size_t at = 0;
    for (const auto& [start, end] : conflicts) {
      if (at + b.bytes <= start) break;  // fits in the gap before this one
      at = std::max(at, align_up(end, align));
    }
    offsets[i] = at;
    arena = std::max(arena, at + b.bytes);
    placed.push_back(i);
  }
  *total = align_up(arena, align);
  return offsets;
}

// ---- Session ------------------------------------------------------------------------

struct Session::Impl {
  struct Step {
    OpType type = OpType::input;
    int x = -1, b = -1, y = -1;        // arena buffers (x = -1: the caller's pixels)
    size_t x_elems = 0, y_elems = 0;   // per image
    ConvGeometry g;                    // pools: per image geometry (batch is set per run)
    int kernel = -1;                   // index into kernels (conv2d, fully_connected)
    int scratch = -1;                  // arena buffer of the kernel's scratch
    AddParams add;
  };
  struct ArenaDelete {
    void operator()(std::byte* p) const { ::operator delete(p, std::align_val_t{kArenaAlign}); }
  };

  std::shared_ptr<const Model> model;
  int max_batch = 1;
  Isa isa = Isa::reference;
  std::vector<std::shared_ptr<const ConvKernel>> kernels;  // the model's, shared
  std::vector<Step> steps;
  std::vector<size_t> offsets, sizes;
  std::unique_ptr<std::byte, ArenaDelete> arena;
  size_t arena_bytes = 0, unshared_bytes = 0;
  int output = -1;
  size_t classes = 0;
  bool profiling = false;
  Profile profile;

  void run_step(const Step& st, const uint8_t* pixels, int batch) const;

  int8_t* buf(int i) const { return reinterpret_cast<int8_t*>(arena.get() + offsets[i]); }
  std::span<std::byte> bytes(int i) const { return {arena.get() + offsets[i], sizes[i]}; }
};

Session::Session(std::shared_ptr<const Model> model, int max_batch, Isa isa) : impl_(std::make_unique<Impl>()) {
  if (!model) throw std::invalid_argument("Session: no model");
  if (max_batch < 1) throw std::invalid_argument("Session: max_batch " + std::to_string(max_batch) + " must be >= 1");
  Impl& s = *impl_;
  s.model = std::move(model);
  s.max_batch = max_batch;
  s.isa = isa;
  const ModelDesc& m = s.model->desc();
  const int n_ops = static_cast<int>(m.ops.size());

  // One buffer per activation an op produces; lifetime = [producer, last reader].
  std::vector<int> buffer_of(m.tensors.size(), -1);
  std::vector<Lifetime> life;
  for (int i = 0; i < n_ops; ++i) {
    const uint32_t y = m.ops[i].output;
    buffer_of[y] = static_cast<int>(life.size());
    const size_t bytes = checked_mul(static_cast<size_t>(m.tensors[y].numel()), max_batch, "an activation");
    life.push_back({bytes, i, y == m.output ? n_ops : i});
  }
  for (int i = 0; i < n_ops; ++i)
    for (uint32_t t : m.ops[i].inputs)
      if (buffer_of[t] >= 0) life[buffer_of[t]].last = std::max(life[buffer_of[t]].last, i);

  s.kernels.reserve(n_ops);
  s.steps.reserve(n_ops);
  for (int i = 0; i < n_ops; ++i) {
    const OpDesc& op = m.ops[i];
    const TensorDesc& x = m.tensors[op.inputs[0]];
    const TensorDesc& y = m.tensors[op.output];
    Impl::Step st;
    st.type = op.type;
    st.x = buffer_of[op.inputs[0]];
    st.y = buffer_of[op.output];
    st.x_elems = static_cast<size_t>(x.numel());
    st.y_elems = static_cast<size_t>(y.numel());
    const auto& p = op.params;
    switch (op.type) {
      case OpType::input: break;
      case OpType::conv2d:
      case OpType::fully_connected: {
        st.kernel = static_cast<int>(s.kernels.size());
        s.kernels.push_back(s.model->kernel(static_cast<size_t>(i), isa));
        const size_t scratch = s.kernels.back()->scratch_bytes(max_batch);
        if (scratch > 0) {
          st.scratch = static_cast<int>(life.size());
          life.push_back({scratch, i, i});
        }
        break;
      }
      case OpType::add: {
        const TensorDesc& b = m.tensors[op.inputs[1]];
        st.b = buffer_of[op.inputs[1]];
        const int32_t off = carry_offset(y.dtype);
        AddParams& a = st.add;
        a.a_zp = carry_zp(x);
        a.b_zp = carry_zp(b);
        a.left_shift = p[param::kLeftShift];
        a.a_mult = p[param::kAMult];
        a.a_shift = p[param::kAShift];
        a.b_mult = p[param::kBMult];
        a.b_shift = p[param::kBShift];
        a.out_mult = p[param::kOutMult];
        a.out_shift = p[param::kOutShift];
        a.zp_out = carry_zp(y);
        a.act_min = p[param::kAddActMin] - off;
        a.act_max = p[param::kAddActMax] - off;
        break;
      }
      case OpType::max_pool:
      case OpType::avg_pool:
      case OpType::global_avg_pool: {
        ConvGeometry& g = st.g;
        g.in_h = static_cast<int>(x.shape[0]);
        g.in_w = static_cast<int>(x.shape[1]);
        g.in_c = g.out_c = static_cast<int>(x.shape[2]);
        if (op.type != OpType::global_avg_pool) {
          g.kernel_h = p[param::kPoolKH];
          g.kernel_w = p[param::kPoolKW];
          g.stride = p[param::kPoolStride];
          g.pad = p[param::kPoolPad];
        }
        break;
      }
    }
    s.steps.push_back(st);
  }

  s.sizes.reserve(life.size());
  for (const Lifetime& l : life) {
    s.sizes.push_back(l.bytes);
    if (s.unshared_bytes > std::numeric_limits<size_t>::max() / 4 - l.bytes)
      throw std::invalid_argument("Session: the activations do not fit in memory");
    s.unshared_bytes += align_up(l.bytes, kArenaAlign);
  }
  s.offsets = plan_arena(life, kArenaAlign, &s.arena_bytes);
  s.arena.reset(static_cast<std::byte*>(::operator new(std::max<size_t>(s.arena_bytes, kArenaAlign),
                                                       std::align_val_t{kArenaAlign})));
  std::memset(s.arena.get(), 0, s.arena_bytes);
  s.output = buffer_of[m.output];
  s.classes = static_cast<size_t>(s.model->num_classes());
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Model& Session::model() const { return *impl_->model; }
int Session::max_batch() const { return impl_->max_batch; }
Isa Session::isa() const { return impl_->isa; }
size_t Session::arena_bytes() const { return impl_->arena_bytes; }
size_t Session::unshared_bytes() const { return impl_->unshared_bytes; }

// One op of run(): `st` on a batch of images.
void Session::Impl::run_step(const Step& st, const uint8_t* pixels, int batch) const {
  const Impl& s = *this;
  const size_t n = static_cast<size_t>(batch);
  int8_t* y = s.buf(st.y);
  switch (st.type) {
    case OpType::input: {
      const InputCtx ctx{pixels, y};
      parallel_for(n * st.x_elems, kElementGrain, &ctx, input_chunk);
      break;
    }
    case OpType::conv2d:
    case OpType::fully_connected: {
      const std::span<std::byte> scratch = st.scratch >= 0 ? s.bytes(st.scratch) : std::span<std::byte>();
      s.kernels[st.kernel]->run(batch, s.buf(st.x), y, scratch);
      break;
    }
    case OpType::add: {
      const AddCtx ctx{s.buf(st.x), s.buf(st.b), &st.add, y, s.isa};
      parallel_for(n * st.y_elems, kElementGrain, &ctx, add_chunk);
      break;
    }
    case OpType::max_pool:
    case OpType::avg_pool:
    case OpType::global_avg_pool: {
      const PoolCtx ctx{st.type, &st.g, s.buf(st.x), y, st.x_elems, st.y_elems};
      parallel_for(n, 1, &ctx, pool_chunk);
      break;
    }
  }
}

std::span<const int8_t> Session::run(const uint8_t* pixels, int batch) {
  Impl& s = *impl_;
  if (batch < 1 || batch > s.max_batch)
    throw std::invalid_argument("Session::run: batch " + std::to_string(batch) + " is outside [1, " +
                                std::to_string(s.max_batch) + "]");
  if (!pixels) throw std::invalid_argument("Session::run: no pixels");
  if (!s.profiling) {
    for (const Impl::Step& st : s.steps) s.run_step(st, pixels, batch);
  } else {
    using Clock = std::chrono::steady_clock;
    for (size_t i = 0; i < s.steps.size(); ++i) {
      const Clock::time_point t0 = Clock::now();
      s.run_step(s.steps[i], pixels, batch);
      s.profile.op_ns[i] += static_cast<uint64_t>(std::chrono::nanoseconds(Clock::now() - t0).count());
    }
    ++s.profile.runs;
    s.profile.images += static_cast<uint64_t>(batch);
  }
  return {s.buf(s.output), static_cast<size_t>(batch) * s.classes};
}

void Session::set_profiling(bool on) {
  Impl& s = *impl_;
  if (on && !s.profiling) s.profile = Profile{std::vector<uint64_t>(s.steps.size(), 0), 0, 0};
  s.profiling = on;
}

const Session::Profile& Session::profile() const { return impl_->profile; }

// ---- profile table (display only) ---------------------------------------------------------

std::string profile_table(const Model& model, const Session::Profile& p) {
  const ModelDesc& d = model.desc();
  if (p.op_ns.size() != d.ops.size())
    throw std::invalid_argument("profile_table: the profile has " + std::to_string(p.op_ns.size()) +
                                " ops, the model " + std::to_string(d.ops.size()));
  uint64_t total_ns = 0;
  for (uint64_t ns : p.op_ns) total_ns += ns;
  const double images = p.images > 0 ? static_cast<double>(p.images) : 1.0;
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%llu runs, %llu images; wall time per image over the ops: %.1f us\n",
                static_cast<unsigned long long>(p.runs), static_cast<unsigned long long>(p.images),
                total_ns / 1e3 / images);
  out += line;
  std::snprintf(line, sizeof line, "%4s  %-15s  %-22s  %-10s  %9s  %9s  %6s  %7s\n", "op", "type", "name", "output",
                "MMAC/img", "us/img", "share", "GMAC/s");
  out += line;
  for (size_t i = 0; i < d.ops.size(); ++i) {
    const OpDesc& op = d.ops[i];
    std::string shape;
    for (int64_t dim : d.tensors[op.output].shape) {
      if (!shape.empty()) shape.push_back('x');
      shape.append(std::to_string(dim));
    }
    const double macs = static_cast<double>(model.op_macs(i));
    char gmacs[32] = "";
    if (macs > 0 && p.op_ns[i] > 0) std::snprintf(gmacs, sizeof gmacs, "%.1f", macs * images / p.op_ns[i]);
    std::snprintf(line, sizeof line, "%4zu  %-15s  %-22s  %-10s  %9.3f  %9.2f  %5.1f%%  %7s\n", i, op_name(op.type),
                  op.name.substr(0, 22).c_str(), shape.c_str(), macs / 1e6, p.op_ns[i] / 1e3 / images,
                  total_ns ? 100.0 * p.op_ns[i] / total_ns : 0.0, gmacs);
    out += line;
  }
  return out;
}

// ---- top-k ------------------------------------------------------------------------------

std::vector<Scored> top_k(std::span<const int8_t> row, int k) {
  std::vector<Scored> all(row.size());
  for (size_t i = 0; i < row.size(); ++i) all[i] = {static_cast<int>(i), row[i]};
  const size_t kk = std::min(row.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(kk), all.end(),
                    [](const Scored& a, const Scored& b) { return a.value != b.value ? a.value > b.value : a.index < b.index; });
  all.resize(kk);
  return all;
}

int argmax(std::span<const int8_t> row) {
  int best = -1;
  for (size_t i = 0; i < row.size(); ++i)
    if (best < 0 || row[i] > row[static_cast<size_t>(best)]) best = static_cast<int>(i);
  return best;
}

}  // namespace octet::engine
