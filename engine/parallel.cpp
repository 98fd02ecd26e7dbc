// engine/parallel.cpp: the engine's only thread wrapper. With oneTBB (the
// normal build) parallel_for runs in a task arena of num_threads() workers;
// built without it (OCTET_ENGINE_NO_TBB, e.g. the Arm cross build) it runs on
// a small fork-join pool of std::threads of its own (below). Kernels compute
// every output element from its inputs alone, so the result never depends on
// how the range is cut or on which thread runs a piece.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/kernels.h"

#ifndef OCTET_ENGINE_NO_TBB
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#endif

namespace octet::engine {

#ifndef OCTET_ENGINE_NO_TBB

namespace {

int all_cores() { return std::max(1, tbb::info::default_concurrency()); }

// The thread count is chosen by set_num_threads, or on first use (every
// core). The arena is made on the first parallel call that needs more than
// one thread: at 1 thread the engine makes no arena and wakes no worker
// (oneTBB's workers cost about 0.7 MB of resident memory at 2 threads,
// docs/results.md, "footprint"). set_num_threads must not race with a
// running parallel_for (set the threads once, before running).
struct Pool {
  std::mutex mutex;
  std::atomic<int> threads{0};                   // 0: not chosen yet
  std::atomic<tbb::task_arena*> arena{nullptr};  // owned below, once made
  std::unique_ptr<tbb::task_arena> owned;
};
Pool& pool() {
  static Pool p;
  return p;
}

tbb::task_arena& arena(int threads) {
  Pool& p = pool();
  if (tbb::task_arena* a = p.arena.load(std::memory_order_acquire)) return *a;
  std::lock_guard<std::mutex> lock(p.mutex);
  if (!p.owned) {
    p.owned = std::make_unique<tbb::task_arena>(threads);
    p.arena.store(p.owned.get(), std::memory_order_release);
  }
  return *p.owned;
}

}  // namespace

void set_num_threads(int threads) {
  Pool& p = pool();
  const int t = threads <= 0 ? all_cores() : threads;
  std::lock_guard<std::mutex> lock(p.mutex);
  p.arena.store(nullptr, std::memory_order_release);
  p.owned.reset();
  p.threads.store(t, std::memory_order_release);
}

int num_threads() {
  Pool& p = pool();
  int t = p.threads.load(std::memory_order_acquire);
  if (t == 0) {
    std::lock_guard<std::mutex> lock(p.mutex);
    t = p.threads.load(std::memory_order_relaxed);
    if (t == 0) {
      t = all_cores();
      p.threads.store(t, std::memory_order_release);
    }
  }
  return t;
}


void parallel_for(size_t n, size_t grain, const void* ctx, void (*fn)(const void* ctx, size_t begin, size_t end)) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const int threads = num_threads();
  if (n <= grain || threads == 1) {
    fn(ctx, 0, n);
    return;
  }
  arena(threads).execute([&] {
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n, grain),
                      [&](const tbb::blocked_range<size_t>& r) { fn(ctx, r.begin(), r.end()); });
  });
}

#else  // OCTET_ENGINE_NO_TBB: the engine's own fork-join pool

namespace {

int all_cores() { return std::max(1, static_cast<int>(std::thread::hardware_concurrency())); }

using Body = void (*)(const void* ctx, size_t begin, size_t end);

// One polling step of a thread waiting for a flag another core will set soon.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// How many polls a waiting thread makes before it sleeps on a condition
// variable: tens of microseconds, longer than the gap between two layers of a
// batch-1 inference, so a running model keeps its threads awake (a sleeping
// thread costs a system call and a scheduler wake-up per layer: batch-1 runs
// went from 3,000 images/s on one thread to 2,000 on two without this).
constexpr int kPolls = 4000;

// Polls `ready` up to kPolls times; true once it holds.
template <class Ready>
bool poll(Ready ready) {
  for (int i = 0; i < kPolls; ++i) {
    if (ready()) return true;
    cpu_relax();
  }
  return ready();
}

// threads - 1 workers wait until a job is posted; the caller works too. A job
// is [0, n) cut into `chunks` pieces of `size` elements (the last one
// shorter); every participant claims pieces from one atomic counter until none
// is left, so a slow thread delays the job by one piece at most. Waiting
// threads poll first, then sleep (kPolls). Posting and running allocate
// nothing (Session::run's promise). One job at a time: a second caller waits
// for the first; a call from inside a piece (a worker, or the caller while it
// works) runs inline. Pieces must not throw (the kernels do not; an exception
// on a worker would end the process).
class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    workers_.reserve(static_cast<size_t>(threads - 1));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);  // ends the workers' polling
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  int threads() const { return threads_; }

  void run(size_t n, size_t grain, const void* ctx, Body fn) {
    const size_t per = std::max(grain, (n + 4 * static_cast<size_t>(threads_) - 1) / (4 * static_cast<size_t>(threads_)));
    if (threads_ == 1 || n <= grain || in_piece_) {
      fn(ctx, 0, n);
      return;
    }
    std::lock_guard<std::mutex> one_job(job_mutex_);
    // A worker that woke late for the previous job may still hold its
    // description; it must leave before the next job reuses the counter.
    poll([this] { return busy_.load(std::memory_order_acquire) == 0; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      idle_.wait(lock, [this] { return busy_.load(std::memory_order_relaxed) == 0; });
      job_ = Job{ctx, fn, n, per, (n + per - 1) / per};
      next_.store(0, std::memory_order_relaxed);
      done_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();  // no system call unless a worker sleeps
    done_.fetch_add(claim(job_), std::memory_order_acq_rel);
    const auto finished = [this] { return done_.load(std::memory_order_acquire) == job_.chunks; };
    if (poll(finished)) return;
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, finished);
  }

 private:
  struct Job {
    const void* ctx = nullptr;
    Body fn = nullptr;
    size_t n = 0, size = 0, chunks = 0;
  };

  // Runs pieces of `job` until none is left; returns how many it ran.
  size_t claim(const Job& job) {
    in_piece_ = true;
    size_t ran = 0;
    for (size_t i = next_.fetch_add(1, std::memory_order_relaxed); i < job.chunks;
         i = next_.fetch_add(1, std::memory_order_relaxed), ++ran) {
      const size_t begin = i * job.size;
      job.fn(job.ctx, begin, std::min(job.n, begin + job.size));
    }
    in_piece_ = false;
    return ran;
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      poll([&] { return generation_.load(std::memory_order_acquire) != seen; });
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      const Job job = job_;
      busy_.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      const size_t ran = claim(job);
      lock.lock();
      busy_.fetch_sub(1, std::memory_order_release);
      done_.fetch_add(ran, std::memory_order_acq_rel);
      idle_.notify_all();  // the caller, if it sleeps on the job or on busy_
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex job_mutex_;  // one job at a time
  // mutex_ orders the changes of job_, generation_, busy_ and stop_ (the
  // atomics among them are also polled without it) and the pieces' done_
  // counts against the sleepers' checks.
  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  Job job_;
  std::atomic<uint64_t> generation_{0};  // bumped by every job (and by the destructor)
  std::atomic<size_t> next_{0};          // the next unclaimed piece
  std::atomic<size_t> done_{0};          // pieces finished
  std::atomic<int> busy_{0};             // workers holding a copy of job_
  bool stop_ = false;
  static thread_local bool in_piece_;
};

thread_local bool Pool::in_piece_ = false;

// set_num_threads must not race with a running parallel_for (set the threads
// once, before running), as with the oneTBB arena.
std::mutex g_pool_mutex;
std::unique_ptr<Pool> g_pool;

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (!g_pool) g_pool = std::make_unique<Pool>(all_cores());
  return *g_pool;
}

}  // namespace

void set_num_threads(int threads) {
  const int t = threads <= 0 ? all_cores() : threads;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool && g_pool->threads() == t) return;
  g_pool.reset();  // joins the old workers first
  g_pool = std::make_unique<Pool>(t);
}

int num_threads() { return pool().threads(); }

void parallel_for(size_t n, size_t grain, const void* ctx, void (*fn)(const void* ctx, size_t begin, size_t end)) {
  if (n == 0) return;
  pool().run(n, std::max<size_t>(grain, 1), ctx, fn);
}

#endif

}  // namespace octet::engine
