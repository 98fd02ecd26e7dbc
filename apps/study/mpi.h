// apps/study/mpi.h: the little of MPI `octet study` needs: which rank this is,
// a barrier, and one string broadcast from rank 0. Built with MPI when CMake
// finds it (OCTET_HAVE_MPI); the single-process group works without it.
#pragma once

#include <memory>
#include <string>

namespace octet::study {

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  virtual void barrier() {}
  virtual std::string broadcast(const std::string& from_rank0) { return from_rank0; }
};

// True when this process was started by mpirun/mpiexec (Open MPI, MPICH, PMIx).
bool launched_by_mpi();
// The MPI world when launched by mpirun (MPI_Init now, MPI_Finalize when the
// group is destroyed), else a group of one. Throws std::runtime_error when
// launched by mpirun but built without MPI.
std::unique_ptr<ProcessGroup> join_process_group();
// Whether this build has MPI.
bool have_mpi();

}  // namespace octet::study
