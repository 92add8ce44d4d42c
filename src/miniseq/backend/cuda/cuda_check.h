// Every CUDA runtime and cuBLASLt call is checked; failures become miniseq::Error with the call site.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "miniseq/core/check.h"

#define MS_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                       \
    cudaError_t err_ = (call);                                                                               \
    if (err_ != cudaSuccess)                                                                                 \
      ::miniseq::fail("CUDA error ", cudaGetErrorString(err_), " at ", __FILE__, ":", __LINE__, ": " #call); \
  } while (0)

#define MS_CUBLAS_CHECK(call)                                                                         \
  do {                                                                                                \
    cublasStatus_t st_ = (call);                                                                      \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                 \
      ::miniseq::fail("cuBLAS error ", cublasLtGetStatusString(st_), " at ", __FILE__, ":", __LINE__, \
                      ": " #call);                                                                    \
  } while (0)
