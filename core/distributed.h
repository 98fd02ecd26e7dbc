// core/distributed.h: the few collective operations data-parallel training
// needs, behind one interface, and the groups that provide them.
//
//   auto world = join_world();                // MPI's world under mpirun, else a group of one
//   world->allreduce(grads, n, Reduce::sum);  // every rank now holds the sum of every rank's grads
//
// A Communicator is a group of `size()` processes (ranks) that call the same
// collectives in the same order; each collective returns when every rank has
// contributed. The groups:
//   - the group of one (local_group()): every collective is the identity.
//     A build without MPI, or a process not started by mpirun, trains with it.
//   - MPI's world (join_world() under mpirun, in a build that found MPI): the
//     processes mpirun started, on one machine or many (Open MPI).
//   - ThreadGroup: N ranks as N threads of one process, for tests of what
//     runs on top (gradient reduction, synchronized BatchNorm, observers)
//     without mpirun. Its reductions run in rank order, so they are
//     deterministic.
//
// Faults: a rank that dies or hangs must not hang the others. Every MPI
// collective here waits with a deadline (the group's timeout, 300 s unless
// set): past it, the rank prints which collective waited, for how long and
// on which rank, and aborts the whole job (MPI_Abort), so mpirun ends with an
// error instead of hanging. A rank killed outright is noticed by mpirun
// itself, which stops the others.
//
// Threads: collectives are called from one thread per process (the training
// loop's); the work between them may use every core.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace octet {

enum class Reduce { sum, min, max };

// What a group has moved, for `octet bench train` and the logs.
struct CommStats {
  int64_t collectives = 0;   // calls (blocking and non-blocking)
  int64_t bytes = 0;         // bytes contributed by this rank to reductions and broadcasts
  double wait_seconds = 0;   // time spent blocked in collectives or in wait()
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A name for messages: "MPI world (4 ranks)", "one process".
  virtual std::string describe() const = 0;

  // In place: data (n values) becomes the element-wise reduction over ranks.
  virtual void allreduce(float* data, size_t n, Reduce op) = 0;
  virtual void allreduce(double* data, size_t n, Reduce op) = 0;
  // bytes from `root` to every rank, in place.
  virtual void broadcast(void* data, size_t bytes, int root = 0) = 0;
  virtual void barrier() = 0;

  // A non-blocking sum: start it, compute, then wait. `data` must stay alive
  // and untouched until wait() returns. Requests are waited for in any order;
  // they must be *started* in the same order on every rank. A group without
  // overlap completes the reduction in start() (correct, just not overlapped).
  using Request = int64_t;
  virtual Request start_allreduce_sum(float* data, size_t n) = 0;
  virtual void wait(Request r) = 0;
  // Lets outstanding requests progress (MPI progresses mostly inside its
  // calls); cheap; call it now and then while computing.
  virtual void poll() {}

  // Ends every rank of the group now with exit code `code` (MPI_Abort): what
  // a rank calls when it fails alone, so the others do not wait for it. The
  // group of one does nothing (the caller then fails as usual).
  virtual void abort(int code) { (void)code; }

  // A string from root to every rank (any length).
  std::string broadcast(const std::string& s, int root = 0);
  // Every rank's string, in rank order, on every rank.
  std::vector<std::string> allgather(const std::string& s);

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CommStats{}; }

 protected:
  CommStats stats_;
};

// The group of one.
Communicator& local_group();

// True when this process was started by mpirun/mpiexec (Open MPI, MPICH, PMIx).
bool launched_by_mpi();
// Whether this build has MPI.
bool have_mpi();
// Under mpirun: MPI's world (MPI_Init now, MPI_Finalize when the last
// reference goes). Otherwise the group of one, as a shared_ptr that owns
// nothing. Throws std::runtime_error when started by mpirun in a build
// without MPI (naming the packages). timeout_seconds: the deadline of every
// collective from now on (see above; infinity: none, e.g. for a barrier that
// waits for hours of other work).
std::shared_ptr<Communicator> join_world(double timeout_seconds = 300);

// N ranks as N threads of this process (tests). Make one, then call
// rank_view(r) from thread r.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size);
  ~ThreadGroup();
  Communicator& rank_view(int rank);
  int size() const;
  // Runs body(rank, comm) on `size` threads and rethrows the first failure.
  static void run(int size, const std::function<void(int rank, Communicator& comm)>& body);

 private:
  struct Shared;
  std::unique_ptr<Shared> shared_;
};

}  // namespace octet
