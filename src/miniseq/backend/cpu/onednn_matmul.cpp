// oneDNN's matmul primitive on bf16 operands with an fp32 destination (see onednn_matmul.h). The transposed
// layouts are strided views (a [K, N] view of B [N, K] has strides {1, K}), so nothing is transposed in
// memory; alpha is the primitive's output scale, beta a sum post-op.
#include "miniseq/backend/cpu/onednn_matmul.h"

#ifdef MINISEQ_ONEDNN

#include <compare>
#include <map>
#include <mutex>

#include <dnnl.hpp>

#include "miniseq/core/check.h"

namespace miniseq::cpu::detail {

namespace {

struct Key {
  int64_t M, N, K, ldc;
  bool ta, tb;
  float alpha, beta;
  auto operator<=>(const Key&) const = default;
};

struct State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mu;
  std::map<Key, dnnl::matmul> primitives;
};

State& state() {
  static State s;
  return s;
}

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

// src [M, K] and weights [K, N] in bf16, dst [M, N] in f32 with row stride ldc.
dnnl::memory::desc src_desc(const Key& k) {
  return dnnl::memory::desc({k.M, k.K}, dt::bf16, k.ta ? dims{1, k.M} : dims{k.K, 1});
}
dnnl::memory::desc weights_desc(const Key& k) {
  return dnnl::memory::desc({k.K, k.N}, dt::bf16, k.tb ? dims{1, k.K} : dims{k.N, 1});
}
dnnl::memory::desc dst_desc(const Key& k) {
  return dnnl::memory::desc({k.M, k.N}, dt::f32, dims{k.ldc, 1});
}

dnnl::matmul primitive_for(const Key& k) {
  State& s = state();
  const std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.primitives.find(k);
  if (it != s.primitives.end()) return it->second;
  dnnl::primitive_attr attr;
  if (k.alpha != 1.0f) attr.set_output_scales(0, {k.alpha});
  if (k.beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(k.beta);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::desc d(src_desc(k), weights_desc(k), dst_desc(k));
  const dnnl::matmul prim(dnnl::matmul::primitive_desc(d, attr, s.engine));
  s.primitives.emplace(k, prim);
  return prim;
}

}  // namespace

bool onednn_available() {
  return true;
}

void onednn_matmul_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                        const uint16_t* B, float beta, float* C, int64_t ldc) {
  const Key k{M, N, K, ldc, ta, tb, alpha, beta};
  try {
    const dnnl::matmul prim = primitive_for(k);
    dnnl::engine& eng = state().engine;
    dnnl::stream stream(eng);
    dnnl::memory a(src_desc(k), eng, const_cast<uint16_t*>(A));
    dnnl::memory b(weights_desc(k), eng, const_cast<uint16_t*>(B));
    dnnl::memory c(dst_desc(k), eng, C);
    prim.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
  } catch (const dnnl::error& e) {
    fail("oneDNN bf16 matmul [", M, ", ", K, "] x [", K, ", ", N, "] failed: ", e.what());
  }
}

}  // namespace miniseq::cpu::detail

#else  // built without oneDNN

#include "miniseq/core/check.h"

namespace miniseq::cpu::detail {

bool onednn_available() {
  return false;
}

void onednn_matmul_bf16(bool, bool, int64_t, int64_t, int64_t, float, const uint16_t*, const uint16_t*, float,
                        float*, int64_t) {
  fail("this miniseq was built without oneDNN (apt install libdnnl-dev, then reconfigure)");
}

}  // namespace miniseq::cpu::detail

#endif
