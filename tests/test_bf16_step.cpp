// One training step (loss and every gradient) of the golden tiny models with the CPU backend in bf16 math
// mode
// (--bf16 True: the linear layers' GEMMs take bf16-rounded inputs, accumulate in fp32) against the same step
// in fp32, with the default MsT + checkpointing policy and with both off.
//
// The bound, from u = 2^-8 (bf16's unit roundoff: rounding to 8 significand bits errs by at most u relative):
// every product of a linear layer rounds both inputs, so each term a·b of its dot products carries a relative
// error ≤ 2u + u², and the result of a dot product of terms with random signs errs by about 2u·||terms||₂,
// i.e. a relative error of order u·sqrt(Σ a²b²)/|Σ ab| ≈ u for the typical output. The forward of one layer
// has 4 chained GEMMs on any path (q/k/v → o, gate/up → down) and the backward three more each (dx, and the
// dW that reads dy and x); norms, softmax and the loss pass relative errors through without amplifying them
// much on these well-conditioned tiny models. So the gradient of the L = 2 layer models collects roughly a
// dozen independent contributions of size ~u, adding like a random walk: relative L2 error per gradient
// tensor ≈ sqrt(12)·u ≈ 3.5u ≈ 1.4e-2, with gradients that are sums of cancelling terms (biases, the k/q
// projections) worse by their own condition. We allow 8u = 3.1e-2 per tensor. The loss is a mean over n ≥ 22
// targets of -log p terms, each off by about u times its logit spread (a few tenths here, against terms ≈ ln
// V ≈ 5) with random signs, so its relative error is ≲ u·0.3/5/sqrt(22) ≈ u/80; allowed u/8 = 4.9e-4.
//
// Measured on the 8 golden cases, both policies (fallback path; MINISEQ_CPU_BF16_GEMM=onednn gives the same
// figures to 2-3 digits): loss relative error 6.6e-7 … 3.3e-5 (≤ u/118); gradient relative L2 error per
// tensor: median 4.1e-3 … 5.7e-3 (≈ 1.4u), max 1.74e-2 (4.5u, qwen2_bias_tied layer 1 k_proj.bias; every
// other case ≤ 8.5e-3). A bf16 mode that rounded nothing would give errors ~1e-6 (fp32 summation order only);
// the test also requires an error of at least 1e-4 somewhere, so a silent fall back to fp32 would fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "miniseq/backend/cpu/cpu_backend.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/decoder.h"
#include "miniseq/model/planner.h"
#include "support/op_check.h"
#include "support/goldens.h"
#include "support/tmpdir.h"

using namespace miniseq;
using test::rel_l2;
namespace fs = std::filesystem;

namespace {

const fs::path kGolden = test::golden_dir();
constexpr double kUBf16 = 0x1p-8;

struct Result {
  double loss = 0;
  std::map<std::string, std::vector<float>> grads;
};

Result run_step(const std::string& name, const StepPolicy& policy, cpu::Math math) {
  const fs::path dir = kGolden / name;
  const ModelConfig config = load_model_config((dir / "model").string());
  const TokenBatch batch = read_token_batch_jsonl((dir / "batch.jsonl").string(), config.vocab_size);
  const int64_t n = batch.count_targets();
  CpuBackend be(math);
  const MemReport planned = plan_step(config, batch.batch, batch.seq, policy, plan_target_for(be, false));
  MemoryPlan plan = MemoryPlan::real(Device::CPU, planned.arena_bytes);
  Decoder model(config, be, plan);
  load_params(SafetensorsModel((dir / "model").string()), config, model.weights());
  model.zero_grads();
  Result r;
  r.loss = model.forward_backward(batch, policy, n) / static_cast<double>(n);
  model.grads().for_each(
      [&](const ParamSpec& s, const Tensor& g) { r.grads[s.name].assign(g.f32(), g.f32() + g.numel()); });
  return r;
}


class Bf16Step : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(Bf16Step, WithinBf16BoundOfFp32) {
  const std::string name = GetParam();
  StepPolicy mst;  // defaults: MsT + checkpointing
  StepPolicy plain;
  plain.mini_sequence = plain.checkpointing = false;
  for (const StepPolicy& p : {mst, plain}) {
    SCOPED_TRACE(p.mini_sequence ? "mst + ckpt" : "plain");
    const Result fp = run_step(name, p, cpu::Math::F32);
    const Result bf = run_step(name, p, cpu::Math::BF16);
    const double loss_err = std::abs(bf.loss - fp.loss) / std::abs(fp.loss);
    EXPECT_LE(loss_err, kUBf16 / 8) << "loss " << bf.loss << " vs fp32 " << fp.loss;
    double worst = 0;
    std::string worst_name;
    std::vector<double> errs;
    for (const auto& [tname, g] : fp.grads) {
      const double e = rel_l2(bf.grads.at(tname), g);
      errs.push_back(e);
      if (e > worst) worst = e, worst_name = tname;
      EXPECT_LE(e, 8 * kUBf16) << tname;
    }
    std::sort(errs.begin(), errs.end());
    EXPECT_GE(worst, 1e-4) << "no bf16 rounding visible: is the bf16 mode computing in fp32?";
    std::printf("[ bf16 ] %-20s %-10s loss rel err %.3e  grad rel L2: median %.3e, max %.3e (%s)\n",
                name.c_str(), p.mini_sequence ? "mst+ckpt" : "plain", loss_err, errs[errs.size() / 2], worst,
                worst_name.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, Bf16Step, ::testing::ValuesIn(test::golden_cases("model/config.json")),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Bf16Step);

// The command line: `miniseq grad --bf16 True` runs the bf16 mode, says which GEMM path it uses, and its loss
// is the bf16 step's (within the bound above of the fp32 loss).
TEST(Bf16Cli, GradSaysWhichPathAndStaysWithinTheBound) {
  const fs::path dir = kGolden / "llama_basic";
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden " << dir;
  test::TempDir tmp;
  const std::string base = "grad --model " + (dir / "model").string() + " --data " +
                           (dir / "batch.jsonl").string() + " --out " + tmp.file("g.safetensors");
  const auto bf = test::run_miniseq(base + " --bf16 True");
  ASSERT_EQ(bf.status, 0) << bf.out;
  EXPECT_NE(bf.out.find("bf16 GEMMs: "), std::string::npos) << bf.out;
  const double loss_bf = std::stod(SafetensorsFile(tmp.file("g.safetensors")).metadata().at("loss"));
  const auto fp = test::run_miniseq(base);
  ASSERT_EQ(fp.status, 0) << fp.out;
  EXPECT_EQ(fp.out.find("bf16 GEMMs"), std::string::npos) << fp.out;
  const double loss_fp = std::stod(SafetensorsFile(tmp.file("g.safetensors")).metadata().at("loss"));
  EXPECT_NE(loss_bf, loss_fp);
  EXPECT_LE(std::abs(loss_bf - loss_fp), kUBf16 / 8 * loss_fp);
}
