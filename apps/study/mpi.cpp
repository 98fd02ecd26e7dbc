#include "apps/study/mpi.h"

#include <cstdlib>
#include <stdexcept>
#include <vector>

#ifdef OCTET_HAVE_MPI
#include <mpi.h>
#endif

namespace octet::study {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

#ifdef OCTET_HAVE_MPI

bool have_mpi() { return true; }

namespace {

class MpiGroup : public ProcessGroup {
 public:
  MpiGroup() {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) MPI_Init(nullptr, nullptr);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiGroup() override {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
  std::string broadcast(const std::string& from_rank0) override {
    int n = static_cast<int>(from_rank0.size());
    MPI_Bcast(&n, 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::vector<char> buf(from_rank0.begin(), from_rank0.end());
    buf.resize(static_cast<size_t>(n));
    MPI_Bcast(buf.data(), n, MPI_CHAR, 0, MPI_COMM_WORLD);
    return std::string(buf.begin(), buf.end());
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<ProcessGroup> join_process_group() {
  if (!launched_by_mpi()) return std::make_unique<ProcessGroup>();
  return std::make_unique<MpiGroup>();
}

#else

bool have_mpi() { return false; }

std::unique_ptr<ProcessGroup> join_process_group() {
  if (launched_by_mpi())
    throw std::runtime_error(
        "this process was started by mpirun, but octet was built without MPI (install openmpi-bin libopenmpi-dev "
        "and configure again; scripts/setup.sh does both)");
  return std::make_unique<ProcessGroup>();
}

#endif

}  // namespace octet::study
