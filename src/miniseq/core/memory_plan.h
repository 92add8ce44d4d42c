// The memory plan: every buffer miniseq uses is a named allocation with a category, carved out of one arena whose
// size is known before the first step. The same code runs in two modes:
//   - dry:  offsets and sizes only, no memory touched (data pointers are null). Used to size the arena and, by the
//           planner, to predict the peak of any model and sequence length on any machine.
//   - real: the arena exists (mmap on CPU, one device allocation on CUDA) and buffers point into it.
// The offset allocator is deterministic (first fit, coalescing free list), so a real run with the same sequence of
// alloc/free calls as the dry run places every buffer at the same offset and never exceeds the planned capacity.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "miniseq/core/tensor.h"

namespace miniseq {

enum class MemCategory : uint8_t {
  Weights,
  Grads,
  Optimizer,
  ResidentActivations,   // kept across layers: checkpointed layer inputs, saved tensors
  TransientActivations,  // one layer's / one chunk's working set
  Workspace,             // scratch of kernels and libraries
};
constexpr int kNumMemCategories = 6;
std::string_view mem_category_name(MemCategory c);  // "weights", "grads", ...

// Bytes per category at one moment.
struct MemBreakdown {
  std::array<size_t, kNumMemCategories> bytes{};
  size_t total() const;
  size_t& operator[](MemCategory c) { return bytes[static_cast<size_t>(c)]; }
  size_t operator[](MemCategory c) const { return bytes[static_cast<size_t>(c)]; }
};

// "1.50 GiB", "12.00 MiB", "3.00 KiB", "512 B": sizes in messages, at the scale they have.
std::string human_bytes(size_t bytes);

struct MemReport {
  size_t peak_bytes = 0;             // most bytes live at once
  MemBreakdown at_peak;              // what was live at that moment, per category
  MemBreakdown peak_by_category;     // each category's own maximum (not simultaneous)
  std::string peak_moment;           // phase label at the peak, e.g. "layer 0 backward, MLP chunk 3"
  size_t arena_bytes = 0;            // arena high-water mark: peak plus alignment and fragmentation
  std::string str() const;           // human-readable table
};

class MemoryPlan;

// An allocation owned by the plan; freed when it goes out of scope (or by release()).
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  void release();
  const Tensor& tensor() const { return t_; }
  operator const Tensor&() const { return t_; }  // NOLINT: a Buffer is used where a Tensor view is expected
  const Tensor* operator->() const { return &t_; }
  size_t offset() const { return offset_; }

 private:
  friend class MemoryPlan;
  MemoryPlan* plan_ = nullptr;
  Tensor t_;
  size_t offset_ = 0;
  size_t bytes_ = 0;
  MemCategory cat_ = MemCategory::Workspace;
};

// Storage for a real arena on a device (CPU is built in; the CUDA backend registers its own).
struct ArenaStorage {
  void* (*allocate)(size_t bytes) = nullptr;
  void (*release)(void* p, size_t bytes) = nullptr;
};
void register_arena_storage(Device dev, ArenaStorage storage);

class MemoryPlan {
 public:
  static constexpr size_t kAlignment = 256;  // AVX-512 needs 64, cudaMalloc gives 256: every buffer is 256-aligned

  // Dry: nothing is allocated, tensors have null data.
  static MemoryPlan dry(Device device = Device::CPU);
  // Real: an arena of `capacity` bytes (normally the arena_bytes of a dry run of the same schedule).
  static MemoryPlan real(Device device, size_t capacity);

  // Not movable: live Buffers point at their plan. Factories return by guaranteed copy elision.
  MemoryPlan(MemoryPlan&&) = delete;
  MemoryPlan& operator=(MemoryPlan&&) = delete;
  MemoryPlan(const MemoryPlan&) = delete;
  ~MemoryPlan();

  Buffer alloc(std::string_view name, Shape shape, DType dtype, MemCategory category);

  bool is_dry() const { return dry_; }
  Device device() const { return device_; }
  size_t capacity() const { return capacity_; }
  void* base() const { return base_; }  // the arena (null when dry)
  size_t live_bytes() const { return live_.total(); }
  MemBreakdown live() const { return live_; }
  MemReport report() const;
  // Number of buffers currently live, and the names of the largest ones (for error messages and debugging).
  size_t live_count() const { return names_.size(); }

  // Phase labels for the report: scoped, nested ("layer 3 backward" > "MLP chunk 2").
  class Phase {
   public:
    Phase(MemoryPlan& plan, std::string label);
    ~Phase();
    Phase(const Phase&) = delete;
    Phase& operator=(const Phase&) = delete;

   private:
    MemoryPlan& plan_;
  };

 private:
  friend class Buffer;
  MemoryPlan(bool dry, Device device, size_t capacity);
  void free_block(const Buffer& b);
  size_t place(size_t bytes);  // offset for a new block (first fit)
  std::string phase_label() const;

  bool dry_;
  Device device_;
  size_t capacity_;  // real: arena size; dry: unlimited
  char* base_ = nullptr;
  std::map<size_t, size_t> free_;  // offset -> size of free blocks below high_water_
  size_t high_water_ = 0;
  MemBreakdown live_;
  MemReport rep_;
  std::map<size_t, std::string> names_;  // offset -> name of live blocks
  std::vector<std::string> phases_;
};

}  // namespace miniseq
