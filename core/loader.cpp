// core/loader.cpp: see core/loader.h.
//
// Prefetch protocol. There are S = max(prefetch, 1) slots; batch k lives in
// slot k % S. A slot goes idle -> pending (scheduled) -> building -> ready and
// back. Whoever moves a slot from pending to building (under mu_) builds it:
// a background task, or next() itself when the task has not started yet, so
// the consumer never waits for a task that has not been picked up. next()
// hands out slot k, then makes it pending for batch k + S. start_epoch and the
// destructor bump generation_ (tasks of an old generation return at once) and
// wait until no slot is building before touching order_ or the slots.
// This file is the only place in core/ that uses oneTBB directly (task_group,
// for fire-and-forget tasks, which core/parallel.h does not offer).
#include "core/loader.h"

#include <tbb/task_group.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/image.h"
#include "core/parallel.h"

namespace octet {

struct Loader::Slot {
  enum State { idle, pending, building, ready };
  State state = idle;
  int64_t batch = -1;
  Batch data;
  std::exception_ptr error;
};

struct Loader::Tasks {
  tbb::task_group group;
};

Loader::Loader(const Dataset& data, LoaderOptions opt) : data_(data), opt_(std::move(opt)) {
  const std::string where = "Loader(" + data_.source + "): ";
  if (opt_.batch_size <= 0)
    throw std::invalid_argument(where + "batch_size must be > 0, got " + std::to_string(opt_.batch_size));
  if (opt_.pad < 0 || (opt_.augment && (opt_.pad > data_.height || opt_.pad > data_.width)))
    throw std::invalid_argument(where + "crop padding must be in 0..image size, got " + std::to_string(opt_.pad));
  if (opt_.cutout < 0 || opt_.cutout > std::max(data_.height, data_.width))
    throw std::invalid_argument(where + "cutout size must be in 0..image size, got " + std::to_string(opt_.cutout));
  if (opt_.cutout_epochs < 0)
    throw std::invalid_argument(where + "cutout_epochs must be >= 0, got " + std::to_string(opt_.cutout_epochs));
  if (opt_.prefetch < 0) throw std::invalid_argument(where + "prefetch must be >= 0");
  if (opt_.shards < 1 || opt_.shard < 0 || opt_.shard >= opt_.shards)
    throw std::invalid_argument(where + "shard " + std::to_string(opt_.shard) + " of " + std::to_string(opt_.shards) +
                                " is not a shard (0 <= shard < shards)");
  if (data_.size() == 0) throw std::invalid_argument(where + "the dataset is empty");
  if (data_.images.size() != size_t(data_.size() * data_.image_numel()))
    throw std::invalid_argument(where + "image buffer does not match size x channels x height x width");
  // The float output needs the preprocessing; so does the cutout fill.
  if ((opt_.output != BatchOutput::uint8_nhwc || opt_.cutout > 0) && opt_.preprocess.channels() != data_.channels)
    throw std::invalid_argument(where + "preprocessing has " + std::to_string(opt_.preprocess.channels()) +
                                " channels, the images " + std::to_string(data_.channels));
  const size_t nslots = size_t(std::max(opt_.prefetch, 1));
  for (size_t i = 0; i < nslots; ++i) slots_.push_back(std::make_unique<Slot>());
  tasks_ = std::make_unique<Tasks>();
}

Loader::~Loader() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    ++generation_;
    wait_idle(lock);
  }
  tasks_->group.wait();  // the remaining tasks see the new generation and return
}

int64_t Loader::batches_per_epoch() const {
  const int64_t n = data_.size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

std::vector<int64_t> Loader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(size_t(data_.size()));
  std::iota(order.begin(), order.end(), int64_t(0));
  if (opt_.shuffle) {
    Rng rng(derive_seed(opt_.seed, epoch), kShuffleStream);
    for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.below(uint32_t(i + 1))]);
  }
  return order;
}

// out: n samples order[index*B ..] -> images (N x C x H x W float) and/or pixels (N x H x W x C uint8).
void Loader::build(const std::vector<int64_t>& order, int64_t epoch, int64_t index, Batch& out) const {
  const int64_t whole_begin = index * opt_.batch_size;
  const int64_t whole_n = std::min<int64_t>(whole_begin + opt_.batch_size, int64_t(order.size())) - whole_begin;
  const auto [row_begin, row_end] = shard_rows(whole_n, opt_.shard, opt_.shards);
  const int64_t begin = whole_begin + row_begin;
  const int64_t end = whole_begin + row_end;
  const int n = int(end - begin);
  const int C = data_.channels, H = data_.height, W = data_.width;
  const size_t numel = size_t(data_.image_numel());
  const bool want_float = opt_.output != BatchOutput::uint8_nhwc;
  const bool want_u8 = opt_.output != BatchOutput::float_nchw;
  out.n = n;
  out.c = C;
  out.h = H;
  out.w = W;
  out.epoch = epoch;
  out.index = index;
  out.labels.resize(size_t(n));
  out.indices.resize(size_t(n));
  out.images.resize(want_float ? size_t(n) * numel : 0);
  out.pixels.resize(want_u8 ? size_t(n) * numel : 0);
  // Cutout may stop after a number of epochs; its draw comes last, so stopping
  // it leaves the crop and flip draws of every image unchanged.
  const int cutout = opt_.cutout_epochs > 0 && epoch >= opt_.cutout_epochs ? 0 : opt_.cutout;
  const std::vector<uint8_t> fill = cutout > 0 ? cutout_fill(opt_.preprocess) : std::vector<uint8_t>();
  parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
    std::vector<uint8_t> tmp(numel);
    for (int64_t i = b; i < e; ++i) {
      const int64_t idx = order[size_t(begin + i)];
      out.indices[size_t(i)] = idx;
      out.labels[size_t(i)] = data_.labels[size_t(idx)];
      const uint8_t* src = data_.image(idx);
      if (opt_.augment) {
        Rng rng = sample_rng(opt_.seed, epoch, idx);
        AugmentParams p = draw_augment(rng, opt_.pad, opt_.flip);
        if (opt_.flip && opt_.alternate_flip) p.flip = alternating_flip(opt_.seed, epoch, idx, opt_.pad);
        draw_cutout(rng, cutout, H, W, p);
        augment_image(src, tmp.data(), C, H, W, p, fill.data());
        src = tmp.data();
      }
      if (want_float) preprocess_image(src, out.images.data() + size_t(i) * numel, C, H, W, opt_.preprocess);
      if (want_u8) chw_to_hwc(src, out.pixels.data() + size_t(i) * numel, H, W, C);
    }
  });
}

Batch Loader::make_batch(int64_t epoch, int64_t index) const {
  if (index < 0 || index >= batches_per_epoch())
    throw std::out_of_range("Loader::make_batch: batch " + std::to_string(index) + " not in 0.." +
                            std::to_string(batches_per_epoch() - 1));
  Batch b;
  build(epoch_order(epoch), epoch, index, b);
  return b;
}

void Loader::wait_idle(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [&] {
    return std::none_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->state == Slot::building; });
  });
}

void Loader::schedule(size_t slot_index, int64_t batch, uint64_t generation) {
  Slot& s = *slots_[slot_index];
  s.batch = batch;
  s.state = Slot::pending;
  s.error = nullptr;
  // With one thread nobody would run the task before next() needs the batch:
  // leave it pending and let next() build it.
  if (opt_.prefetch > 0 && num_threads() > 1)
    tasks_->group.run([this, slot_index, batch, generation] { run_task(slot_index, batch, generation); });
}

void Loader::run_task(size_t slot_index, int64_t batch, uint64_t generation) {
  std::unique_lock<std::mutex> lock(mu_);
  Slot& s = *slots_[slot_index];
  if (generation != generation_ || s.batch != batch || s.state != Slot::pending) return;
  s.state = Slot::building;
  const int64_t epoch = epoch_;
  lock.unlock();
  try {
    build(order_, epoch, batch, s.data);
  } catch (...) {
    s.error = std::current_exception();
  }
  lock.lock();
  s.state = Slot::ready;
  cv_.notify_all();
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  const int64_t nb = batches_per_epoch();
  if (first_batch < 0 || first_batch > nb)
    throw std::out_of_range("Loader::start_epoch: first batch " + std::to_string(first_batch) + " not in 0.." +
                            std::to_string(nb));
  std::unique_lock<std::mutex> lock(mu_);
  ++generation_;
  wait_idle(lock);
  order_ = epoch_order(epoch);
  epoch_ = epoch;
  next_batch_ = first_batch;
  end_batch_ = nb;
  for (auto& s : slots_) {
    s->state = Slot::idle;
    s->batch = -1;
  }
  const int64_t S = int64_t(slots_.size());
  for (int64_t k = first_batch; k < std::min(first_batch + S, nb); ++k) schedule(size_t(k % S), k, generation_);
}

bool Loader::next(Batch& out) {
  std::unique_lock<std::mutex> lock(mu_);
  if (epoch_ < 0) throw std::logic_error("Loader::next called before start_epoch");
  if (next_batch_ >= end_batch_) return false;
  const int64_t k = next_batch_;
  const int64_t S = int64_t(slots_.size());
  const size_t si = size_t(k % S);
  Slot& s = *slots_[si];
  if (s.batch != k || s.state == Slot::idle)
    throw std::logic_error("Loader::next: slot of batch " + std::to_string(k) + " was not scheduled");
  if (s.state == Slot::pending) {
    s.state = Slot::building;
    lock.unlock();
    try {
      build(order_, epoch_, k, s.data);
    } catch (...) {
      s.error = std::current_exception();
    }
    lock.lock();
    s.state = Slot::ready;
  } else {
    cv_.wait(lock, [&] { return s.state == Slot::ready; });
  }
  ++next_batch_;
  std::exception_ptr error = s.error;
  std::swap(out, s.data);
  if (k + S < end_batch_) {
    schedule(si, k + S, generation_);
  } else {
    s.state = Slot::idle;
    s.batch = -1;
  }
  if (error) std::rethrow_exception(error);
  return true;
}

}  // namespace octet
