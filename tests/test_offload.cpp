// Host offload (memory policies beyond MsT): the optimizer state and fp32 master weights on the host with a
// CPU AdamW beside the backward, and checkpointed layer inputs on the host. On the CPU backend the same bits
// move, so every policy must give exactly the default policy's losses, norms and weights, also across a
// resume; and the planner must see the policies (device memory falls, host memory holds what moved) and reach
// the targets for Mistral-7B.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <mutex>

#include "miniseq/io/safetensors.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/param_spec.h"
#include "miniseq/model/planner.h"
#include "miniseq/train/trainer.h"
#include "support/tmpdir.h"
#include "support/train_fixture.h"

using namespace miniseq;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = test::train_test_model();
using test::logged;
using test::random_blocks;
using test::read_weights;
using test::tiny_setup;

TrainArgs base_args(const std::string& out) {
  TrainArgs a = test::parse_train_args({"--max_steps", "4", "--learning_rate", "2e-3", "--warmup_steps", "1",
                                        "--logging_steps", "1", "--model_max_length", "20",
                                        "--per_device_train_batch_size", "2", "--save_strategy", "no",
                                        "--weight_decay", "0.01", "--max_grad_norm", "1.0"});
  a.output_dir = out;
  return a;
}

// The CPU backend with the asynchronous copies at their latest: each runs only when its ticket is waited for,
// on the device or on the host (the copy stream is in order, so waiting for a ticket runs every earlier copy
// too). A schedule that reads an upload's destination before waiting, overwrites a download's source before
// waiting, or never waits, computes something else than the immediate copies of the plain CPU backend.
// Thread-safe like the CUDA backend's copies (the host optimizer's worker issues and waits for copies too).
class DeferredCopies final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  uint64_t download_async(const Tensor& host_dst, const Tensor& src) override { return defer(host_dst, src); }
  uint64_t upload_async(const Tensor& dst, const Tensor& host_src) override { return defer(dst, host_src); }
  void wait_copy(uint64_t ticket) override {
    std::lock_guard<std::mutex> lock(mu_);
    while (!pending_.empty() && pending_.front().first <= ticket) {
      cpu_->copy(pending_.front().second.first, pending_.front().second.second);
      pending_.erase(pending_.begin());
    }
  }
  void sync_copy(uint64_t ticket) override { wait_copy(ticket); }
  size_t pending() const { return pending_.size(); }
  uint64_t issued() const { return issued_; }

  void embedding_forward(const int32_t* ids, const Tensor& table, const Tensor& out) override {
    cpu_->embedding_forward(ids, table, out);
  }
  void embedding_backward(const int32_t* ids, const Tensor& dout, const Tensor& dtable,
                          int64_t padding_idx) override {
    cpu_->embedding_backward(ids, dout, dtable, padding_idx);
  }
  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                       const Tensor& rstd) override {
    cpu_->rmsnorm_forward(x, w, eps, y, rstd);
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dx, const Tensor* dw, bool dx_accum) override {
    cpu_->rmsnorm_backward(dy, x, w, rstd, dx, dw, dx_accum);
  }
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    cpu_->linear_forward(x, w, bias, y);
  }
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor* dw,
                       const Tensor* db, bool dx_accum) override {
    cpu_->linear_backward(dy, x, w, dx, dw, db, dx_accum);
  }
  void rope_forward(const Tensor& x, const int32_t* positions, const RopeParams& p) override {
    cpu_->rope_forward(x, positions, p);
  }
  void rope_backward(const Tensor& dx, const int32_t* positions, const RopeParams& p) override {
    cpu_->rope_backward(dx, positions, p);
  }
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse, const AttentionParams& p) override {
    cpu_->attention_forward(q, k, v, out, lse, p);
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv, const AttentionParams& p) override {
    cpu_->attention_backward(dout, q, k, v, out, lse, dq, dk, dv, p);
  }
  void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& act) override {
    cpu_->swiglu_forward(gate, up, act);
  }
  void swiglu_backward(const Tensor& dact, const Tensor& gate, const Tensor& up, const Tensor& dgate,
                       const Tensor& dup) override {
    cpu_->swiglu_backward(dact, gate, up, dgate, dup);
  }
  double cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) override {
    return cpu_->cross_entropy_forward_backward(logits, labels, scale);
  }
  CrossEntropyStats cross_entropy_forward(const Tensor& logits, const int32_t* labels) override {
    return cpu_->cross_entropy_forward(logits, labels);
  }
  void add_inplace(const Tensor& y, const Tensor& x) override { cpu_->add_inplace(y, x); }
  void scale_inplace(const Tensor& y, float s) override { cpu_->scale_inplace(y, s); }
  void fill_zero(const Tensor& y) override { cpu_->fill_zero(y); }
  void copy(const Tensor& dst, const Tensor& src) override { cpu_->copy(dst, src); }
  double sum_squares(const Tensor& x) override { return cpu_->sum_squares(x); }
  void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                  const AdamWParams& p, const Tensor* master) override {
    cpu_->adamw_step(param, grad, m, v, p, master);
  }

 private:
  uint64_t defer(const Tensor& dst, const Tensor& src) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({++issued_, {dst, src}});
    return issued_;
  }
  std::mutex mu_;
  std::unique_ptr<Backend> cpu_ = make_cpu_backend();
  std::vector<std::pair<uint64_t, std::pair<Tensor, Tensor>>> pending_;  // ticket -> (dst, src)
  uint64_t issued_ = 0;
};

struct StepResult {
  double loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

// One forward + backward of the golden llama_basic batch with the inputs of `offload` layers on the host.
StepResult offloaded_step(Backend& be, int64_t offload, const StepPolicy& policy) {
  const ModelConfig config = load_model_config(kModel.string());
  const TokenBatch batch =
      read_token_batch_jsonl((kModel.parent_path() / "batch.jsonl").string(), config.vocab_size);
  PlanTarget t = PlanTarget::cpu();
  t.optimizer = false;
  t.offload_layers = offload;
  const RunPlan run = plan_run(config, batch.batch, batch.seq, policy, t);
  MemoryPlan plan = MemoryPlan::real(Device::CPU, run.device.arena_bytes);
  MemoryPlan host = MemoryPlan::real(Device::CPU, std::max<size_t>(run.host.arena_bytes, 1));
  Decoder model(config, be, plan);
  model.set_checkpoint_offload(&host, offload);
  load_params(SafetensorsModel(kModel.string()), config, model.weights());
  model.zero_grads();
  StepResult r;
  r.loss = model.forward_backward(batch, policy, batch.count_targets());
  model.grads().for_each(
      [&](const ParamSpec& s, const Tensor& g) { r.grads[s.name].assign(g.f32(), g.f32() + g.numel()); });
  return r;
}

}  // namespace

// The decoder's copy schedule (stage in forward, prefetch one layer ahead in backward) waits for every copy
// before touching either side: with the copies deferred to their wait, the step is still the plain step, bit
// for bit.
TEST(DecoderOffload, CopiesDeferredToTheirWaitGiveTheSameBits) {
  StepPolicy policy;
  policy.checkpointing = true;
  auto cpu = make_cpu_backend();
  const StepResult base = offloaded_step(*cpu, 0, policy);
  for (const int64_t layers : {int64_t{1}, int64_t{-1}}) {
    SCOPED_TRACE(layers);
    DeferredCopies be;
    const StepResult r = offloaded_step(be, layers, policy);
    EXPECT_GT(be.issued(), 0u);
    EXPECT_EQ(be.pending(), 0u) << "a copy was never waited for";
    EXPECT_EQ(r.loss, base.loss);
    EXPECT_EQ(r.grads, base.grads);
  }
}

TEST(TrainOffload, HostPoliciesGiveTheDefaultPolicysBits) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 20, 131, 31);
  const TrainResult base = run_training(tiny_setup(base_args(tmp.file("default")), data));
  struct Variant {
    const char* name;
    bool offload_optimizer, in_backward;
    int64_t offload_layers;
    int64_t accumulation;
  };
  for (const Variant v :
       {Variant{"host_optimizer", true, false, 0, 1}, Variant{"host_optimizer_fused", true, true, 0, 1},
        Variant{"host_checkpoints", false, false, -1, 1}, Variant{"host_everything", true, true, 1, 1}}) {
    SCOPED_TRACE(v.name);
    TrainArgs a = base_args(tmp.file(v.name));
    a.offload_optimizer = v.offload_optimizer;
    a.optimizer_in_backward = v.in_backward;
    a.offload_checkpoints = v.offload_layers;
    const TrainResult r = run_training(tiny_setup(a, data));
    EXPECT_GT(r.planned_host.peak_bytes, 0u);
    // The device holds less. Offloading both layers of this 2-layer model saves nothing: a layer's backward
    // keeps its uploaded input and the prefetched next one (PlannerOffload.HostHoldsWhatLeavesTheDevice has
    // the sum).
    if (v.offload_optimizer) {
      EXPECT_LT(r.planned.peak_bytes, base.planned.peak_bytes);
    } else {
      EXPECT_LE(r.planned.peak_bytes, base.planned.peak_bytes);
    }
    EXPECT_EQ(r.last_loss, base.last_loss);
    EXPECT_EQ(read_weights(tmp.file(v.name)), read_weights(tmp.file("default")));
    EXPECT_EQ(logged(tmp.file(v.name), "loss"), logged(tmp.file("default"), "loss"));
    EXPECT_EQ(logged(tmp.file(v.name), "grad_norm"), logged(tmp.file("default"), "grad_norm"));
  }
  // Gradient accumulation keeps persistent gradients; the host optimizer then runs once per step.
  TrainArgs a = base_args(tmp.file("ga_default"));
  a.gradient_accumulation_steps = 2;
  a.per_device_train_batch_size = 1;
  run_training(tiny_setup(a, data));
  a.output_dir = tmp.file("ga_host");
  a.offload_optimizer = true;
  a.offload_checkpoints = 1;
  run_training(tiny_setup(a, data));
  EXPECT_EQ(read_weights(tmp.file("ga_host")), read_weights(tmp.file("ga_default")));
}

// The host optimizer's pipeline (gradient downloads into the staging ring, CPU AdamW, weight uploads from the
// ring, the decoder keeping each group until its download is done) with every copy deferred to its wait: the
// same bits.
TEST(TrainOffload, HostOptimizerWithCopiesDeferredToTheirWait) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 20, 131, 33);
  run_training(tiny_setup(base_args(tmp.file("default")), data));
  for (const int64_t layers : {int64_t{0}, int64_t{-1}}) {
    SCOPED_TRACE(layers);
    const std::string out = tmp.file("deferred" + std::to_string(layers));
    TrainArgs a = base_args(out);
    a.offload_optimizer = a.optimizer_in_backward = true;
    a.offload_checkpoints = layers;
    DeferredCopies be;
    TrainSetup s = tiny_setup(a, data);
    s.backend = &be;
    run_training(s);
    EXPECT_GT(be.issued(), 0u);
    EXPECT_EQ(be.pending(), 0u) << "a copy was never waited for";
    EXPECT_EQ(read_weights(out), read_weights(tmp.file("default")));
    EXPECT_EQ(logged(out, "loss"), logged(tmp.file("default"), "loss"));
  }
}

TEST(TrainOffload, ResumeWithTheOptimizerOnTheHostIsBitExact) {
  test::TempDir tmp;
  const Dataset data = random_blocks(4, 20, 131, 32);
  TrainArgs a = base_args(tmp.file("straight"));
  a.offload_optimizer = true;
  a.optimizer_in_backward = true;
  run_training(tiny_setup(a, data));
  TrainArgs b = a;
  b.output_dir = tmp.file("resumed");
  b.max_steps = 2;
  b.save_strategy = SaveStrategy::Steps;
  b.save_steps = 2;
  run_training(tiny_setup(b, data));
  ASSERT_TRUE(fs::exists(tmp.file("resumed/checkpoint-2/optimizer.safetensors")));
  // The host optimizer's fp32 master weights are in the checkpoint.
  SafetensorsFile opt(tmp.file("resumed/checkpoint-2/optimizer.safetensors"));
  EXPECT_NE(opt.find("master.model.embed_tokens.weight"), nullptr);
  b.max_steps = 4;
  b.resume_from_checkpoint = "True";
  run_training(tiny_setup(b, data));
  EXPECT_EQ(read_weights(tmp.file("resumed")), read_weights(tmp.file("straight")));
}

TEST(PlannerOffload, HostHoldsWhatLeavesTheDevice) {
  ModelConfig c = load_model_config(kModel.string());
  c.num_hidden_layers = 6;  // the plan only: deep enough that offloading layer inputs pays for its buffers
  c.sliding_window.resize(6, 0);
  const auto specs = param_specs(c);
  int64_t params = 0;
  for (const auto& s : specs) params += s.shape.numel();
  const size_t group = static_cast<size_t>(4 * host_staging_floats(specs) / 2);  // a layer's fp32 gradients
  const int64_t B = 2, S = 64;
  StepPolicy p;
  PlanTarget t = PlanTarget::cpu();
  t.optimizer_in_backward = true;
  const RunPlan dev = plan_run(c, B, S, p, t);
  EXPECT_EQ(dev.host.peak_bytes, 0u);
  t.offload_optimizer = true;
  const RunPlan host_opt = plan_run(c, B, S, p, t);
  // The device loses the two fp32 moments; the host gets master + moments (fp32) + the staging ring. The host
  // optimizer downloads each gradient group while the backward goes on, so the device holds two groups at
  // once (the one being computed and the previous one), one with the optimizer on the device.
  EXPECT_EQ(host_opt.host.peak_bytes, static_cast<size_t>(4 * (3 * params + host_staging_floats(specs))));
  EXPECT_EQ(dev.device.peak_by_category[MemCategory::Optimizer], static_cast<size_t>(8 * params));
  EXPECT_EQ(host_opt.device.peak_by_category[MemCategory::Optimizer], 0u);
  EXPECT_EQ(dev.device.peak_by_category[MemCategory::Grads], group);
  EXPECT_EQ(host_opt.device.peak_by_category[MemCategory::Grads], 2 * group);
  EXPECT_LT(host_opt.device.peak_bytes, dev.device.peak_bytes);
  // Offloading layer inputs moves L·T·d to the host. At the peak, in layer k's backward, the device kept
  // inputs 0…k; offloaded, it keeps two [T, d] buffers (layer k's input, uploaded, and layer k−1's,
  // prefetched).
  t.offload_layers = -1;
  const RunPlan all = plan_run(c, B, S, p, t);
  const size_t layer_input = static_cast<size_t>(B * S * c.hidden_size * 4);
  EXPECT_EQ(all.host.peak_bytes, host_opt.host.peak_bytes + c.num_hidden_layers * layer_input);
  int k_peak = -1;
  ASSERT_EQ(std::sscanf(host_opt.device.peak_moment.c_str(), "layer %d backward", &k_peak), 1);
  EXPECT_EQ(all.device.peak_moment, host_opt.device.peak_moment);
  EXPECT_GE(k_peak, 2);
  EXPECT_EQ(host_opt.device.peak_bytes - all.device.peak_bytes,
            static_cast<size_t>(k_peak + 1 - 2) * layer_input);
  // min_offload_layers: the fewest that fit.
  const size_t budget = (all.device.arena_bytes + host_opt.device.arena_bytes) / 2;
  const int64_t k = min_offload_layers(c, B, S, p, t, budget, 0);
  ASSERT_GE(k, 1);
  t.offload_layers = k;
  EXPECT_LE(plan_run(c, B, S, p, t).device.arena_bytes, budget);
  t.offload_layers = k - 1;
  EXPECT_GT(plan_run(c, B, S, p, t).device.arena_bytes, budget);
  // A host budget that cannot take it: no fit.
  t.offload_layers = -1;
  EXPECT_EQ(min_offload_layers(c, B, S, p, t, budget, 1024), -1);
}

TEST(PlannerOffload, AutoClimbsThePolicyLadder) {
  ModelConfig c = load_model_config(kModel.string());
  // The plan only, deep enough that offloading every layer input saves device memory: with L layers it saves
  // L - 2 of them (the backward holds its own input and the prefetched next one), nothing at the model's L
  // = 2.
  c.num_hidden_layers = 6;
  c.sliding_window.resize(6, 0);
  const int64_t B = 1, S = 512;
  StepPolicy p;
  auto rung = [&](size_t budget) {
    PlanTarget t = PlanTarget::cpu();
    StepPolicy q = p;
    std::string name;
    return auto_policy(c, B, S, budget, 0, &t, &q, &name) ? name : std::string("none");
  };
  const auto ladder = policy_ladder(PlanTarget::cpu());
  std::vector<size_t> need;
  for (const auto& [name, t] : ladder) {
    PlanTarget tt = t;
    if (tt.offload_layers < 0) tt.offload_layers = c.num_hidden_layers;
    need.push_back(plan_run(c, B, S, p, tt).device.arena_bytes);
  }
  EXPECT_EQ(rung(need[0]), ladder[0].first);
  EXPECT_EQ(rung(need[1]), ladder[1].first);
  EXPECT_EQ(rung(need[2]), ladder[2].first);
  EXPECT_EQ(rung(need[3]), ladder[3].first);
  EXPECT_EQ(rung(need[4]), ladder[4].first);
}

// The targets, from the planner on the real Mistral-7B config with the CUDA backend's dtypes: full
// fine-tuning at >= 256K tokens on an 80 GiB device and >= 512K on a 141 GiB device, with 128 GiB of host
// memory.
TEST(PlannerOffload, Mistral7BReachesTheTargetLengths) {
  const ModelConfig c =
      load_model_config((fs::path(MINISEQ_SOURCE_DIR) / "bench/configs/mistral-7b.json").string());
  StepPolicy p;
  PlanTarget t = PlanTarget::cuda();
  t.optimizer_in_backward = t.offload_optimizer = true;
  t.offload_layers = -1;
  const size_t host = size_t{128} << 30;
  EXPECT_GE(find_max_length(c, 1, p, t, size_t{80} << 30, int64_t{1} << 24, host), 256 * 1024);
  EXPECT_GE(find_max_length(c, 1, p, t, size_t{141} << 30, int64_t{1} << 24, host), 512 * 1024);
}
