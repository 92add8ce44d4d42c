// The memory plan: per-category accounting, the peak and where it happens, dry runs that touch no memory and
// agree exactly with real runs, alignment, reuse of freed space.
#include <gtest/gtest.h>

#include <cstdint>

#include "miniseq/core/memory_plan.h"

using namespace miniseq;

namespace {

// A miniature schedule: weights, then per "layer" a transient buffer and a checkpoint, with a phase label.
MemReport run_schedule(MemoryPlan& plan, std::vector<size_t>* offsets) {
  Buffer w = plan.alloc("weights", {1000}, DType::F32, MemCategory::Weights);        // 4000 -> 4096
  Buffer g = plan.alloc("grads", {1000}, DType::BF16, MemCategory::Grads);           // 2000 -> 2048
  std::vector<Buffer> ckpt;
  for (int l = 0; l < 3; ++l) {
    MemoryPlan::Phase phase(plan, "layer " + std::to_string(l) + " forward");
    Buffer t = plan.alloc("transient", {64, 64}, DType::F32, MemCategory::TransientActivations);  // 16384
    ckpt.push_back(plan.alloc("ckpt", {100}, DType::F32, MemCategory::ResidentActivations));    // 400 -> 512
    if (offsets) offsets->push_back(t.offset());
    if (t->data) {
      // Real run: the memory is usable and aligned.
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % MemoryPlan::kAlignment, 0u);
      static_cast<float*>(t->data)[64 * 64 - 1] = 1.0f;
    }
  }
  {
    MemoryPlan::Phase phase(plan, "backward");
    MemoryPlan::Phase inner(plan, "chunk 2");
    Buffer big = plan.alloc("big", {10000}, DType::F32, MemCategory::Workspace);  // 40000 -> 40192
    if (offsets) offsets->push_back(big.offset());
  }
  return plan.report();
}

}  // namespace

TEST(MemoryPlan, PeakPerCategoryAndMoment) {
  MemoryPlan plan = MemoryPlan::dry();
  MemReport r = run_schedule(plan, nullptr);
  EXPECT_EQ(plan.live_bytes(), 0u);
  // The peak: weights + grads + 3 checkpoints + the 40000-byte workspace.
  EXPECT_EQ(r.peak_bytes, 4096u + 2048u + 3u * 512u + 40192u);
  EXPECT_EQ(r.peak_moment, "backward, chunk 2");
  EXPECT_EQ(r.at_peak[MemCategory::Weights], 4096u);
  EXPECT_EQ(r.at_peak[MemCategory::ResidentActivations], 3u * 512u);
  EXPECT_EQ(r.at_peak[MemCategory::TransientActivations], 0u);
  EXPECT_EQ(r.peak_by_category[MemCategory::TransientActivations], 16384u);
  EXPECT_EQ(r.peak_by_category[MemCategory::Workspace], 40192u);
  EXPECT_GE(r.arena_bytes, r.peak_bytes);
  EXPECT_NE(r.str().find("backward, chunk 2"), std::string::npos);
}

TEST(MemoryPlan, DryAndRealAgreeExactly) {
  std::vector<size_t> dry_offsets, real_offsets;
  MemoryPlan dry = MemoryPlan::dry();
  MemReport dr = run_schedule(dry, &dry_offsets);
  MemoryPlan real = MemoryPlan::real(Device::CPU, dr.arena_bytes);
  MemReport rr = run_schedule(real, &real_offsets);
  EXPECT_EQ(dry_offsets, real_offsets);
  EXPECT_EQ(dr.peak_bytes, rr.peak_bytes);
  EXPECT_EQ(dr.arena_bytes, rr.arena_bytes);
  EXPECT_LE(rr.arena_bytes, real.capacity());
}

TEST(MemoryPlan, DryRunOfA7BModelTouchesNothing) {
  MemoryPlan plan = MemoryPlan::dry();
  // 7.24e9 fp32 weights + grads + two moments: ~116 GB, only counted.
  Buffer w = plan.alloc("w", {7241732096}, DType::F32, MemCategory::Weights);
  Buffer g = plan.alloc("g", {7241732096}, DType::F32, MemCategory::Grads);
  Buffer m = plan.alloc("m", {2, 7241732096}, DType::F32, MemCategory::Optimizer);
  EXPECT_EQ(w->data, nullptr);
  EXPECT_GT(plan.report().peak_bytes, 115000000000u);
}

TEST(MemoryPlan, FreedSpaceIsReusedAndCoalesced) {
  MemoryPlan plan = MemoryPlan::dry();
  Buffer a = plan.alloc("a", {256}, DType::F32, MemCategory::Workspace);  // 1024
  Buffer b = plan.alloc("b", {256}, DType::F32, MemCategory::Workspace);  // 1024
  Buffer c = plan.alloc("c", {256}, DType::F32, MemCategory::Workspace);  // 1024
  a.release();
  b.release();  // a and b coalesce into one 2048-byte hole
  Buffer d = plan.alloc("d", {512}, DType::F32, MemCategory::Workspace);
  EXPECT_EQ(d.offset(), 0u);
  EXPECT_EQ(plan.report().arena_bytes, 3072u);
  Buffer moved = std::move(d);  // moving keeps the allocation alive exactly once
  EXPECT_EQ(plan.live_bytes(), 3072u);
  moved.release();
  c.release();
  EXPECT_EQ(plan.live_bytes(), 0u);
  // With everything free the next allocation starts at 0 again.
  Buffer e = plan.alloc("e", {10}, DType::F32, MemCategory::Workspace);
  EXPECT_EQ(e.offset(), 0u);
}

TEST(MemoryPlan, RealRunBeyondThePlanFailsClearly) {
  MemoryPlan plan = MemoryPlan::real(Device::CPU, 4096);
  Buffer a = plan.alloc("fits", {1024}, DType::F32, MemCategory::Workspace);
  try {
    Buffer b = plan.alloc("too-big", {1}, DType::F32, MemCategory::Workspace);
    ADD_FAILURE() << "allocation beyond the arena did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'too-big'"), std::string::npos) << e.what();
  }
}
