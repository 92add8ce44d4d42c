// The NCCL communicator (dist/communicator.h): collectives on the CUDA backend's device tensors, one process
// per GPU, bootstrapped through MPI (rank 0's ncclUniqueId is broadcast by MPI); host buffers go through MPI.
// Built when CMake finds nccl.h and libnccl (the CUDA toolkit) and MPI (MINISEQ_WITH_NCCL).
#pragma once

#include <memory>

#include "miniseq/dist/communicator.h"

namespace miniseq::cuda {

// Selects GPU `local_rank` of this node (cudaSetDevice) and joins the NCCL communicator of mpi's ranks.
std::unique_ptr<dist::Communicator> make_nccl_communicator(dist::Communicator& mpi, int local_rank);

}  // namespace miniseq::cuda
