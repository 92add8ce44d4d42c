// The planner: `miniseq memplan` output, the max-length search, --auto, and the plan against reality — the
// planned arena vs the measured peak RSS of a real step within 5% on a small model for every policy.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "miniseq/core/random.h"
#include "miniseq/core/rss.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "miniseq/ops/backend.h"
#include "support/tmpdir.h"

using namespace miniseq;

namespace {

ModelConfig small_model() {
  return parse_model_config(R"({"model_type":"mistral","hidden_size":256,"intermediate_size":704,
    "num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":8000,
    "sliding_window":512,"max_position_embeddings":65536})",
                            "small");
}

const char* kMistral7B = R"({"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,
  "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"vocab_size":32000,
  "max_position_embeddings":32768,"sliding_window":4096})";

}  // namespace

TEST(Memplan, MaxLengthIsTheBoundaryAndPoliciesOrder) {
  const ModelConfig c = parse_model_config(kMistral7B, "mistral-7b");
  const size_t budget = 141ull << 30;
  StepPolicy mst, ckpt_only;
  ckpt_only.mini_sequence = false;
  const int64_t s_mst = find_max_length(c, 1, mst, PlanTarget::cuda(), budget);
  const int64_t s_ckpt = find_max_length(c, 1, ckpt_only, PlanTarget::cuda(), budget);
  ASSERT_GT(s_mst, 0);
  EXPECT_LE(plan_step(c, 1, s_mst, mst, PlanTarget::cuda()).arena_bytes, budget);
  EXPECT_GT(plan_step(c, 1, s_mst + 1, mst, PlanTarget::cuda()).arena_bytes, budget);
  EXPECT_GT(s_mst, s_ckpt);  // MsT fits longer sequences than checkpointing alone
  // Weights + grads + fp32 moments of Mistral-7B alone exceed 80 GiB: nothing fits.
  EXPECT_EQ(find_max_length(c, 1, mst, PlanTarget::cuda(), 80ull << 30), 0);
}

TEST(Memplan, AutoChunksFitWithFewestChunks) {
  const ModelConfig c = small_model();
  const int64_t S = 4096;
  StepPolicy p;
  // With plenty of memory nothing is split.
  ASSERT_TRUE(auto_chunks(c, 1, S, PlanTarget::cpu(), size_t{1} << 40, &p));
  EXPECT_EQ(p.mlp_chunk_rows(c, S), S);
  EXPECT_EQ(p.lm_head_chunk_rows(c, S), S);
  // With a budget between the smallest and the unsplit plan, the choice fits and splits.
  StepPolicy tiny;
  tiny.mlp_chunk_tokens = 64;
  tiny.lm_head_chunks = 64;
  const size_t low = plan_step(c, 1, S, tiny, PlanTarget::cpu()).arena_bytes;
  const size_t high = plan_step(c, 1, S, p, PlanTarget::cpu()).arena_bytes;
  ASSERT_LT(low, high);
  const size_t budget = low + (high - low) / 3;
  StepPolicy q;
  ASSERT_TRUE(auto_chunks(c, 1, S, PlanTarget::cpu(), budget, &q));
  EXPECT_LE(plan_step(c, 1, S, q, PlanTarget::cpu()).arena_bytes, budget);
  EXPECT_LT(q.mlp_chunk_rows(c, S) * 1.0 / S + q.lm_head_chunk_rows(c, S) * 1.0 / S, 2.0);
  EXPECT_FALSE(auto_chunks(c, 1, S, PlanTarget::cpu(), low / 2, &q));
}

TEST(Memplan, CliTextAndJson) {
  test::TempDir tmp;
  test::write_text(tmp.file("config.json"), kMistral7B);
  auto r = test::run_miniseq("memplan --model " + tmp.file("config.json") +
                             " --model_max_length 32768 --device cuda --memory 141GiB --find_max_length --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["peak_bytes"].get<size_t>(), 0u);
  EXPECT_EQ(j["by_category"]["weights"].get<size_t>() % 256, 0u);
  EXPECT_GT(j["by_category"]["optimizer"].get<size_t>(), 2 * j["by_category"]["weights"].get<size_t>());
  EXPECT_GT(j["max_length"]["checkpointing + MsT"].get<int64_t>(), j["max_length"]["checkpointing only"].get<int64_t>());
  EXPECT_GT(j["max_length"]["checkpointing only"].get<int64_t>(), j["max_length"]["neither"].get<int64_t>());
  EXPECT_NE(j["peak_moment"].get<std::string>().find("layer"), std::string::npos);
  r = test::run_miniseq("memplan --model " + tmp.file("config.json") + " --model_max_length 1024");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("transient_activations"), std::string::npos);
  EXPECT_NE(r.out.find("checkpointing only"), std::string::npos);
  r = test::run_miniseq("memplan --model " + tmp.file("config.json") + " --find_max_length --memory 80 parsecs");
  EXPECT_EQ(r.status, 2);
}

// Planned arena vs measured peak RSS of a real step (weights initialized, grads zeroed, one forward + backward)
// above the process baseline: within 5% for every policy and two lengths.
TEST(Memplan, PlanMatchesMeasuredPeakRss) {
  const ModelConfig c = small_model();
  auto be = make_cpu_backend();
  be->warm_up();  // library workspaces belong to the baseline (see backend/cpu/warm_up.cpp)
  for (int64_t S : {1024, 4096}) {
    for (auto [mst, ckpt] : {std::pair{true, true}, {false, true}, {false, false}}) {
      StepPolicy p;
      p.mini_sequence = mst;
      p.checkpointing = ckpt;
      const MemReport planned = plan_step(c, 1, S, p, PlanTarget{Device::CPU, DType::F32, DType::F32, DType::F32, false});
      TokenBatch b;
      b.batch = 1, b.seq = S;
      Rng rng(1);
      for (int64_t i = 0; i < S; ++i) b.input_ids.push_back(static_cast<int32_t>(rng.below(8000)));
      b.labels = b.input_ids;
      const size_t baseline = current_rss_bytes();
      reset_peak_rss();
      {
        MemoryPlan plan = MemoryPlan::real(Device::CPU, planned.arena_bytes);
        Decoder model(c, *be, plan);
        model.weights().for_each([&](const ParamSpec&, const Tensor& t) {
          for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 0.02f * static_cast<float>(rng.normal());
        });
        model.zero_grads();
        model.forward_backward(b, p, b.count_targets());
      }
      const double measured = static_cast<double>(peak_rss_bytes() - baseline);
      const double ratio = measured / static_cast<double>(planned.arena_bytes);
      std::printf("S=%lld mst=%d ckpt=%d planned %zu measured %.0f ratio %.4f\n", (long long)S, mst, ckpt,
                  planned.arena_bytes, measured, ratio);
      EXPECT_NEAR(ratio, 1.0, 0.05) << "S=" << S << " mst=" << mst << " ckpt=" << ckpt << " planned "
                                    << planned.arena_bytes << " measured " << measured;
    }
  }
}

// The CUDA backend's per-call scratch is in the plan (ops/scratch.h), so a plan that fills the card cannot run out
// of memory inside a step: the workspace category holds exactly the layout of the step's sizes. The CPU needs none.
TEST(Memplan, CudaScratchIsPlanned) {
  const ModelConfig c = parse_model_config(kMistral7B, "mistral");
  StepPolicy p;
  const int64_t S = 500000;
  const MemReport gpu = plan_step(c, 1, S, p, PlanTarget::cuda());
  ScratchShape shape;
  shape.B = 1, shape.S = S, shape.H = 32, shape.D = 128, shape.norm_cols = 4096, shape.backward = true;
  shape.loss_rows = p.lm_head_chunk_rows(c, S);
  const ScratchLayout layout = cuda_scratch_layout(shape);
  const size_t ws = gpu.peak_by_category[MemCategory::Workspace];
  EXPECT_GE(ws, layout.total);
  EXPECT_LT(ws, layout.total + MemoryPlan::kAlignment);
  // What the issue measured outside the plan: the RoPE table of 500K positions (256 MiB of cos and sin at D = 128)
  // and attention's row terms [B, H, S].
  EXPECT_GE(layout.bytes[static_cast<size_t>(ScratchSlot::RopeTable)], size_t{2} * S * 64 * 4);
  EXPECT_EQ(layout.bytes[static_cast<size_t>(ScratchSlot::RowTerms)], size_t{32} * S * 4);
  // Every slot is 256-byte aligned and disjoint.
  for (size_t k = 1; k < layout.offset.size(); ++k) {
    EXPECT_EQ(layout.offset[k] % ScratchLayout::kAlign, 0u);
    EXPECT_GE(layout.offset[k], layout.offset[k - 1] + layout.bytes[k - 1]);
  }
  // Biases widen the partials of the bias gradient: at most 1024 row groups × the widest biased output.
  shape.bias_cols = 4096;
  EXPECT_EQ(cuda_scratch_layout(shape).bytes[static_cast<size_t>(ScratchSlot::Partials)], size_t{1024} * 4096 * 4);

  const MemReport cpu = plan_step(c, 1, 4096, p, PlanTarget::cpu());
  EXPECT_EQ(cpu.peak_by_category[MemCategory::Workspace], 0u);
}
