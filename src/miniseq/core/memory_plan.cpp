#include "miniseq/core/memory_plan.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace miniseq {

namespace {

void* cpu_arena_allocate(size_t bytes) {
  // Anonymous mmap: page-aligned, zero-filled, committed lazily, so RSS follows what the schedule touches.
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}
void cpu_arena_release(void* p, size_t bytes) { munmap(p, bytes); }

std::array<ArenaStorage, 2>& storages() {
  static std::array<ArenaStorage, 2> s{ArenaStorage{cpu_arena_allocate, cpu_arena_release}, ArenaStorage{}};
  return s;
}

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

std::string human_bytes(size_t b) {
  char buf[32];
  double v = static_cast<double>(b);
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", v / (1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", v / (1ull << 20));
  else if (b >= (1ull << 10)) std::snprintf(buf, sizeof buf, "%.2f KiB", v / (1ull << 10));
  else std::snprintf(buf, sizeof buf, "%zu B", b);
  return buf;
}

std::string_view mem_category_name(MemCategory c) {
  switch (c) {
    case MemCategory::Weights: return "weights";
    case MemCategory::Grads: return "grads";
    case MemCategory::Optimizer: return "optimizer";
    case MemCategory::ResidentActivations: return "resident_activations";
    case MemCategory::TransientActivations: return "transient_activations";
    case MemCategory::Workspace: return "workspace";
  }
  return "?";
}

size_t MemBreakdown::total() const {
  size_t t = 0;
  for (size_t b : bytes) t += b;
  return t;
}

std::string MemReport::str() const {
  std::ostringstream os;
  os << "peak " << human_bytes(peak_bytes) << " (" << peak_bytes << " bytes) at "
     << (peak_moment.empty() ? "setup" : peak_moment) << "\n";
  char line[160];
  std::snprintf(line, sizeof line, "  %-22s %14s %14s\n", "category", "at peak", "own max");
  os << line;
  for (int i = 0; i < kNumMemCategories; ++i) {
    auto c = static_cast<MemCategory>(i);
    std::snprintf(line, sizeof line, "  %-22s %14s %14s\n", std::string(mem_category_name(c)).c_str(),
                  human_bytes(at_peak[c]).c_str(), human_bytes(peak_by_category[c]).c_str());
    os << line;
  }
  os << "  arena (with alignment and fragmentation) " << human_bytes(arena_bytes) << "\n";
  return os.str();
}

void register_arena_storage(Device dev, ArenaStorage storage) { storages()[static_cast<size_t>(dev)] = storage; }

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    plan_ = o.plan_;
    t_ = o.t_;
    offset_ = o.offset_;
    bytes_ = o.bytes_;
    cat_ = o.cat_;
    o.plan_ = nullptr;
    o.t_ = Tensor();
  }
  return *this;
}

void Buffer::release() {
  if (plan_) plan_->free_block(*this);
  plan_ = nullptr;
  t_ = Tensor();
}

MemoryPlan MemoryPlan::dry(Device device) { return MemoryPlan(true, device, SIZE_MAX); }

MemoryPlan MemoryPlan::real(Device device, size_t capacity) { return MemoryPlan(false, device, capacity); }

MemoryPlan::MemoryPlan(bool dry, Device device, size_t capacity)
    : dry_(dry), device_(device), capacity_(capacity) {
  if (!dry_ && capacity_ > 0) {
    const ArenaStorage& s = storages()[static_cast<size_t>(device_)];
    MS_CHECK(s.allocate, "no memory arena is available for device ", device_name(device_),
             " (was miniseq built with that backend?)");
    base_ = static_cast<char*>(s.allocate(capacity_));
    MS_CHECK(base_, "could not allocate the ", human_bytes(capacity_), " memory arena on ", device_name(device_),
             "; run `miniseq memplan` to see what the run needs and shorten --model_max_length or change policy");
  }
}

MemoryPlan::~MemoryPlan() {
  MS_DASSERT(names_.empty() && "buffers outlive their memory plan");
  if (base_) storages()[static_cast<size_t>(device_)].release(base_, capacity_);
}

size_t MemoryPlan::place(size_t bytes) {
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second >= bytes) {
      size_t off = it->first;
      size_t rest = it->second - bytes;
      free_.erase(it);
      if (rest) free_[off + bytes] = rest;
      return off;
    }
  }
  // No hole fits: extend at the top (merging a trailing free block if there is one).
  size_t off = high_water_;
  if (!free_.empty()) {
    auto last = std::prev(free_.end());
    if (last->first + last->second == high_water_) {
      off = last->first;
      free_.erase(last);
    }
  }
  high_water_ = std::max(high_water_, off + bytes);
  return off;
}

Buffer MemoryPlan::alloc(std::string_view name, Shape shape, DType dtype, MemCategory category) {
  Buffer b;
  size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  size_t padded = align_up(std::max<size_t>(bytes, 1), kAlignment);
  size_t off = place(padded);
  if (!dry_ && off + padded > capacity_) {
    fail("memory plan exceeded: buffer '", name, "' (", human_bytes(bytes), ") at offset ", off,
         " does not fit the planned arena of ", human_bytes(capacity_), " at ", phase_label(),
         " (internal error: the real schedule differs from the dry run that sized the arena)");
  }
  b.plan_ = this;
  b.offset_ = off;
  b.bytes_ = padded;
  b.cat_ = category;
  b.t_ = Tensor(dry_ ? nullptr : base_ + off, shape, dtype, device_);
  names_[off] = std::string(name);

  live_[category] += padded;
  rep_.peak_by_category[category] = std::max(rep_.peak_by_category[category], live_[category]);
  size_t total = live_.total();
  if (total > rep_.peak_bytes) {
    rep_.peak_bytes = total;
    rep_.at_peak = live_;
    rep_.peak_moment = phase_label();
  }
  rep_.arena_bytes = high_water_;
  return b;
}

void MemoryPlan::free_block(const Buffer& b) {
  live_[b.cat_] -= b.bytes_;
  names_.erase(b.offset_);
  auto [it, inserted] = free_.emplace(b.offset_, b.bytes_);
  MS_DASSERT(inserted);
  (void)inserted;
  // Coalesce with the next and previous free blocks.
  auto next = std::next(it);
  if (next != free_.end() && it->first + it->second == next->first) {
    it->second += next->second;
    free_.erase(next);
  }
  if (it != free_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      free_.erase(it);
    }
  }
}

MemReport MemoryPlan::report() const { return rep_; }

std::string MemoryPlan::phase_label() const {
  std::string s;
  for (const auto& p : phases_) s += (s.empty() ? "" : ", ") + p;
  return s;
}

MemoryPlan::Phase::Phase(MemoryPlan& plan, std::string label) : plan_(plan) {
  plan_.phases_.push_back(std::move(label));
}
MemoryPlan::Phase::~Phase() { plan_.phases_.pop_back(); }

}  // namespace miniseq
