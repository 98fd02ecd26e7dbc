// core/distributed.cpp: the group of one, MPI's world (when the build has
// MPI) and the in-process ThreadGroup (see distributed.h).
#include "core/distributed.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#ifdef OCTET_HAVE_MPI
#include <mpi.h>
#endif

namespace octet {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <class T>
void reduce_into(T* acc, const T* x, size_t n, Reduce op) {
  switch (op) {
    case Reduce::sum:
      for (size_t i = 0; i < n; ++i) acc[i] += x[i];
      break;
    case Reduce::min:
      for (size_t i = 0; i < n; ++i) acc[i] = x[i] < acc[i] ? x[i] : acc[i];
      break;
    case Reduce::max:
      for (size_t i = 0; i < n; ++i) acc[i] = x[i] > acc[i] ? x[i] : acc[i];
      break;
  }
}

// ------------------------------------------------------------ the group of one

class LocalGroup final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string describe() const override { return "one process"; }
  void allreduce(float*, size_t, Reduce) override {}
  void allreduce(double*, size_t, Reduce) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  Request start_allreduce_sum(float*, size_t) override { return 0; }
  void wait(Request) override {}
};

}  // namespace

Communicator& local_group() {
  static LocalGroup group;
  return group;
}

std::string Communicator::broadcast(const std::string& s, int root) {
  uint64_t n = s.size();
  broadcast(&n, sizeof n, root);
  std::string out = rank() == root ? s : std::string(n, '\0');
  if (n > 0) broadcast(out.data(), n, root);
  return out;
}

std::vector<std::string> Communicator::allgather(const std::string& s) {
  std::vector<std::string> all(static_cast<size_t>(size()));
  for (int r = 0; r < size(); ++r) all[static_cast<size_t>(r)] = broadcast(r == rank() ? s : std::string(), r);
  return all;
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

// ------------------------------------------------------------ MPI's world

#ifdef OCTET_HAVE_MPI

bool have_mpi() { return true; }

namespace {

MPI_Op mpi_op(Reduce op) {
  switch (op) {
    case Reduce::sum: return MPI_SUM;
    case Reduce::min: return MPI_MIN;
    case Reduce::max: return MPI_MAX;
  }
  return MPI_SUM;
}

int mpi_count(size_t n, const char* what) {
  if (n > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n) + " elements is more than one MPI call takes");
  return static_cast<int>(n);
}

class MpiWorld final : public Communicator {
 public:
  explicit MpiWorld(double timeout) : timeout_(timeout) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiWorld() override {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
  void set_timeout(double seconds) { timeout_ = seconds; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string describe() const override { return "MPI world (" + std::to_string(size_) + " ranks)"; }

  void allreduce(float* data, size_t n, Reduce op) override {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, data, mpi_count(n, "allreduce"), MPI_FLOAT, mpi_op(op), MPI_COMM_WORLD, &r);
    account(n * sizeof(float));
    finish(r, "allreduce");
  }
  void allreduce(double* data, size_t n, Reduce op) override {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, data, mpi_count(n, "allreduce"), MPI_DOUBLE, mpi_op(op), MPI_COMM_WORLD, &r);
    account(n * sizeof(double));
    finish(r, "allreduce");
  }
  void broadcast(void* data, size_t bytes, int root) override {
    MPI_Request r;
    MPI_Ibcast(data, mpi_count(bytes, "broadcast"), MPI_BYTE, root, MPI_COMM_WORLD, &r);
    account(bytes);
    finish(r, "broadcast");
  }
  void barrier() override {
    MPI_Request r;
    MPI_Ibarrier(MPI_COMM_WORLD, &r);
    account(0);
    finish(r, "barrier");
  }
  Request start_allreduce_sum(float* data, size_t n) override {
    MPI_Request r;
    MPI_Iallreduce(MPI_IN_PLACE, data, mpi_count(n, "allreduce"), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r);
    account(n * sizeof(float));
    const Request id = next_id_++;
    pending_[id] = r;
    return id;
  }
  void wait(Request id) override {
    auto it = pending_.find(id);
    if (it == pending_.end()) throw std::logic_error("Communicator::wait: no such request");
    MPI_Request r = it->second;
    pending_.erase(it);
    finish(r, "allreduce (gradient bucket)");
  }
  void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  void poll() override {
    for (auto& [id, r] : pending_) {
      int flag = 0;
      MPI_Test(&r, &flag, MPI_STATUS_IGNORE);
      if (flag) r = MPI_REQUEST_NULL;  // done; wait() then returns at once
    }
  }

 private:
  void account(size_t bytes) {
    ++stats_.collectives;
    stats_.bytes += static_cast<int64_t>(bytes);
  }
  // Waits for r with the deadline; past it, says so and aborts the job.
  void finish(MPI_Request& r, const char* what) {
    const auto t0 = Clock::now();
    for (int spins = 0;; ++spins) {
      int flag = 0;
      MPI_Test(&r, &flag, MPI_STATUS_IGNORE);
      if (flag) break;
      if (spins > 2000) std::this_thread::sleep_for(std::chrono::microseconds(200));
      else std::this_thread::yield();
      if ((spins & 255) == 0 && seconds_since(t0) > timeout_) {
        std::fprintf(stderr,
                     "octet: rank %d of %d: %s got no answer from the other ranks in %.0f s: a rank died or hangs "
                     "(see mpirun's messages, and the other ranks' output); aborting the job\n",
                     rank_, size_, what, timeout_);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 3);
      }
    }
    stats_.wait_seconds += seconds_since(t0);
  }

  double timeout_;
  int rank_ = 0, size_ = 1;
  Request next_id_ = 1;
  std::map<Request, MPI_Request> pending_;
};

}  // namespace

std::shared_ptr<Communicator> join_world(double timeout_seconds) {
  if (!launched_by_mpi()) return std::shared_ptr<Communicator>(&local_group(), [](Communicator*) {});
  // One world per process (MPI_Init runs once); it is finalized at exit.
  static std::shared_ptr<MpiWorld> world = std::make_shared<MpiWorld>(timeout_seconds);
  world->set_timeout(timeout_seconds);
  return world;
}

#else

bool have_mpi() { return false; }

std::shared_ptr<Communicator> join_world(double) {
  if (launched_by_mpi())
    throw std::runtime_error(
        "this process was started by mpirun, but octet was built without MPI (install openmpi-bin libopenmpi-dev "
        "and configure again; scripts/setup.sh does both)");
  return std::shared_ptr<Communicator>(&local_group(), [](Communicator*) {});
}

#endif

// ------------------------------------------------------------ ThreadGroup

// One collective at a time: each rank deposits its buffer and waits; the
// last to arrive runs the collective over every rank's buffer (in rank
// order) and opens the next generation.
struct ThreadGroup::Shared {
  struct View;
  int size;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t generation = 0;
  int arrived = 0;
  bool failed = false;
  std::vector<void*> buffers;
  std::vector<std::string> calls;
  std::vector<std::unique_ptr<View>> views;

  explicit Shared(int n);

  // Rank r's part of one collective; `run` is executed once, by the last
  // rank. `what` ("allreduce sum of 32 doubles") must be the same on every
  // rank: ranks that call different collectives have a bug that MPI would
  // turn into a hang or garbage; here it is an error naming both.
  void collective(int r, void* buffer, const std::string& what,
                  const std::function<void(const std::vector<void*>&)>& run) {
    std::unique_lock<std::mutex> lock(mu);
    if (failed) throw std::runtime_error("ThreadGroup: another rank failed");
    buffers[static_cast<size_t>(r)] = buffer;
    calls[static_cast<size_t>(r)] = what;
    const uint64_t gen = generation;
    if (++arrived == size) {
      for (int k = 1; k < size; ++k)
        if (calls[static_cast<size_t>(k)] != calls[0]) {
          failed = true;
          cv.notify_all();
          throw std::logic_error("ThreadGroup: mismatched collectives: rank 0 called " + calls[0] + ", rank " +
                                 std::to_string(k) + " " + calls[static_cast<size_t>(k)]);
        }
      run(buffers);
      arrived = 0;
      ++generation;
      cv.notify_all();
      return;
    }
    cv.wait(lock, [&] { return generation != gen || failed; });
    if (generation == gen) throw std::runtime_error("ThreadGroup: another rank failed");
  }
  void fail() {
    std::lock_guard<std::mutex> lock(mu);
    failed = true;
    cv.notify_all();
  }
};

struct ThreadGroup::Shared::View final : Communicator {
  Shared* g;
  int r;
  View(Shared* group, int rank) : g(group), r(rank) {}
  int rank() const override { return r; }
  int size() const override { return g->size; }
  std::string describe() const override { return "thread group (" + std::to_string(g->size) + " ranks)"; }

  template <class T>
  void reduce(T* data, size_t n, Reduce op) {
    ++stats_.collectives;
    stats_.bytes += static_cast<int64_t>(n * sizeof(T));
    const char* op_name = op == Reduce::sum ? "sum" : op == Reduce::min ? "min" : "max";
    const std::string what = std::string("allreduce ") + op_name + " of " + std::to_string(n) + " " +
                             (sizeof(T) == sizeof(double) ? "doubles" : "floats");
    g->collective(r, data, what, [n, op](const std::vector<void*>& bufs) {
      std::vector<T> acc(static_cast<const T*>(bufs[0]), static_cast<const T*>(bufs[0]) + n);
      for (size_t k = 1; k < bufs.size(); ++k) reduce_into(acc.data(), static_cast<const T*>(bufs[k]), n, op);
      for (void* b : bufs) std::memcpy(b, acc.data(), n * sizeof(T));
    });
  }
  void allreduce(float* data, size_t n, Reduce op) override { reduce(data, n, op); }
  void allreduce(double* data, size_t n, Reduce op) override { reduce(data, n, op); }
  void broadcast(void* data, size_t bytes, int root) override {
    ++stats_.collectives;
    stats_.bytes += static_cast<int64_t>(bytes);
    const std::string what = "broadcast of " + std::to_string(bytes) + " bytes from rank " + std::to_string(root);
    g->collective(r, data, what, [bytes, root](const std::vector<void*>& bufs) {
      for (size_t k = 0; k < bufs.size(); ++k)
        if (static_cast<int>(k) != root && bytes > 0) std::memcpy(bufs[k], bufs[static_cast<size_t>(root)], bytes);
    });
  }
  void barrier() override {
    ++stats_.collectives;
    g->collective(r, nullptr, "barrier", [](const std::vector<void*>&) {});
  }
  Request start_allreduce_sum(float* data, size_t n) override {
    reduce(data, n, Reduce::sum);
    return 0;
  }
  void wait(Request) override {}
};

ThreadGroup::Shared::Shared(int n) : size(n), buffers(static_cast<size_t>(n)), calls(static_cast<size_t>(n)) {
  for (int r = 0; r < n; ++r) views.push_back(std::make_unique<View>(this, r));
}

ThreadGroup::ThreadGroup(int size) {
  if (size < 1) throw std::invalid_argument("ThreadGroup: size must be >= 1, got " + std::to_string(size));
  shared_ = std::make_unique<Shared>(size);
}

ThreadGroup::~ThreadGroup() = default;

int ThreadGroup::size() const { return shared_->size; }

Communicator& ThreadGroup::rank_view(int rank) {
  if (rank < 0 || rank >= shared_->size)
    throw std::out_of_range("ThreadGroup: rank " + std::to_string(rank) + " of " + std::to_string(shared_->size));
  return *shared_->views[static_cast<size_t>(rank)];
}

void ThreadGroup::run(int size, const std::function<void(int, Communicator&)>& body) {
  ThreadGroup group(size);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      try {
        body(r, group.rank_view(r));
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
        group.shared_->fail();
      }
    });
  for (auto& t : threads) t.join();
  // The first rank that failed for its own reason (not "another rank failed").
  std::exception_ptr first;
  for (auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const std::runtime_error& x) {
      if (std::string(x.what()).rfind("ThreadGroup: another rank failed", 0) == 0) {
        if (!first) first = e;
        continue;
      }
      std::rethrow_exception(e);
    } catch (...) {
      std::rethrow_exception(e);
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace octet
