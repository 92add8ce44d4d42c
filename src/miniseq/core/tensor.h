// A tensor view: pointer + shape (PyTorch order, row-major, contiguous) + dtype + device. It never owns memory;
// buffers come from the memory plan (core/memory_plan.h) or from a memory-mapped file.
//
// Dimension legend used in shape comments across miniseq:
//   B batch, S sequence (tokens), T = B*S rows, d hidden_size, I intermediate_size, V vocab_size,
//   H attention heads, Hkv key/value heads, D head_dim, C chunk rows (mini-sequence), L layers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "miniseq/core/check.h"
#include "miniseq/core/dtype.h"

namespace miniseq {

enum class Device : uint8_t { CPU, CUDA };
std::string_view device_name(Device d);

constexpr int kMaxDims = 4;

struct Shape {
  std::array<int64_t, kMaxDims> dims{};
  int ndim = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  static Shape from(const std::vector<int64_t>& d);

  int64_t operator[](int i) const { return dims[static_cast<size_t>(i < 0 ? i + ndim : i)]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::vector<int64_t> to_vector() const { return {dims.begin(), dims.begin() + ndim}; }
  std::string str() const;  // "[4, 16]"
};

struct Tensor {
  void* data = nullptr;  // null in a dry run: shapes and sizes only
  Shape shape;
  DType dtype = DType::F32;
  Device device = Device::CPU;

  Tensor() = default;
  Tensor(void* p, Shape s, DType t = DType::F32, Device dev = Device::CPU)
      : data(p), shape(s), dtype(t), device(dev) {}

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int ndim() const { return shape.ndim; }
  int64_t size(int i) const { return shape[i]; }
  bool empty() const { return numel() == 0; }

  float* f32() const {
    MS_DASSERT(dtype == DType::F32);
    return static_cast<float*>(data);
  }
  uint16_t* u16() const {
    MS_DASSERT(dtype != DType::F32);
    return static_cast<uint16_t*>(data);
  }

  // Rows [begin, begin+count) along dim 0 (a mini-sequence chunk); same device and dtype.
  Tensor rows(int64_t begin, int64_t count) const;
  // Same memory, new shape with the same number of elements.
  Tensor view(Shape s) const;
};

}  // namespace miniseq
