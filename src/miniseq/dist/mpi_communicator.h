// The MPI communicator (CPU tensors and host buffers): built only when CMake finds MPI (MINISEQ_WITH_MPI).
// Sums are done here in rank order (communicator.h); MPI only moves bytes.
#pragma once

#include <memory>

#include "miniseq/dist/communicator.h"

namespace miniseq::dist {

// Initializes MPI (MPI_THREAD_FUNNELED: one thread calls MPI) and returns MPI_COMM_WORLD's communicator, with
// errors returned rather than fatal and the watchdog of default_timeout_seconds().
std::unique_ptr<Communicator> make_mpi_world();
// This rank's index among the ranks of its node (MPI_COMM_TYPE_SHARED): the GPU it uses.
int mpi_local_rank(Communicator& mpi);
void mpi_finalize();
[[noreturn]] void mpi_abort(int code);

}  // namespace miniseq::dist
