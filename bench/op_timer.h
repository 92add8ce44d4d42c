// A Backend decorator for the benches: forwards every call to the wrapped backend and adds its wall time to a
// per-op tally (bench_step_cpu --ops). Only the bench wraps its backend, and only with --ops: the engine and
// a run without it pay nothing. The wrapped backend does the work and keeps every result bit for bit; the CPU
// backend's ops return when their work is done, so wall time per call is the op's time (a CUDA backend's are
// asynchronous: its tallies would show launch times).
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <utility>

#include "miniseq/ops/backend.h"

namespace miniseq::bench {

class OpTimer final : public Backend {
 public:
  struct Tally {
    int64_t calls = 0;
    double seconds = 0.0;
  };

 private:
  bool lm(const Tensor& w) const { return w.ndim() == 2 && w.size(0) == vocab_; }
  template <class F>
  auto time(const char* key, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    struct Add {  // adds the elapsed time also when f returns a value
      std::map<std::string, Tally>& t;
      const char* key;
      std::chrono::steady_clock::time_point t0;
      ~Add() {
        Tally& e = t[key];
        ++e.calls;
        e.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    } add{t_, key, t0};
    return f();
  }

 public:
  // vocab: the LM head's rows, to tell its products from the layers' linears.
  OpTimer(Backend& inner, int64_t vocab) : in_(inner), vocab_(vocab) {}

  const std::map<std::string, Tally>& tallies() const { return t_; }
  void clear() { t_.clear(); }
  double total() const {
    double s = 0.0;
    for (const auto& [k, v] : t_) s += v.seconds;
    return s;
  }
  // A table of the tallies against `step_seconds` (the rest is the decoder's own time between ops).
  void print(double step_seconds) const {
    std::fprintf(stderr, "  %-28s %7s %9s %7s\n", "op", "calls", "seconds", "%");
    for (const auto& [k, v] : t_)
      std::fprintf(stderr, "  %-28s %7lld %9.4f %6.1f%%\n", k.c_str(), static_cast<long long>(v.calls),
                   v.seconds, 100.0 * v.seconds / step_seconds);
    const double rest = step_seconds - total();
    std::fprintf(stderr, "  %-28s %7s %9.4f %6.1f%%\n", "(between ops)", "", rest,
                 100.0 * rest / step_seconds);
  }

  Device device() const override { return in_.device(); }
  DType param_dtype() const override { return in_.param_dtype(); }
  DType grad_dtype() const override { return in_.grad_dtype(); }
  DType activation_dtype() const override { return in_.activation_dtype(); }
  DType weight_precision() const override { return in_.weight_precision(); }
  DType grad_precision() const override { return in_.grad_precision(); }
  void set_precision(DType w, DType g) override { in_.set_precision(w, g); }
  void warm_up() override { in_.warm_up(); }
  void upload(const Tensor& d, const Tensor& s) override {
    time("copy", [&] { in_.upload(d, s); });
  }
  void download(const Tensor& d, const Tensor& s) override {
    time("copy", [&] { in_.download(d, s); });
  }
  uint64_t download_async(const Tensor& d, const Tensor& s) override {
    return time("copy", [&] { return in_.download_async(d, s); });
  }
  uint64_t upload_async(const Tensor& d, const Tensor& s) override {
    return time("copy", [&] { return in_.upload_async(d, s); });
  }
  void wait_copy(uint64_t t) override { in_.wait_copy(t); }
  void sync_copy(uint64_t t) override { in_.sync_copy(t); }
  size_t scratch_bytes(const ScratchShape& s) const override { return in_.scratch_bytes(s); }
  void set_scratch(void* p, size_t b, const ScratchShape& s) override { in_.set_scratch(p, b, s); }

  void embedding_forward(const int32_t* ids, const Tensor& table, const Tensor& out) override {
    time("embedding fwd", [&] { in_.embedding_forward(ids, table, out); });
  }
  void embedding_backward(const int32_t* ids, const Tensor& dout, const Tensor& dtable,
                          int64_t pad) override {
    time("embedding bwd", [&] { in_.embedding_backward(ids, dout, dtable, pad); });
  }
  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                       const Tensor& rstd) override {
    time("rmsnorm fwd", [&] { in_.rmsnorm_forward(x, w, eps, y, rstd); });
  }
  void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                        const Tensor& dx, const Tensor* dw, bool acc) override {
    time("rmsnorm bwd", [&] { in_.rmsnorm_backward(dy, x, w, rstd, dx, dw, acc); });
  }
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor* b, const Tensor& y) override {
    time(lm(w) ? "GEMM LM head fwd" : "GEMM linear fwd", [&] { in_.linear_forward(x, w, b, y); });
  }
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx, const Tensor* dw,
                       const Tensor* db, bool acc) override {
    time(lm(w) ? "GEMM LM head bwd" : "GEMM linear bwd",
         [&] { in_.linear_backward(dy, x, w, dx, dw, db, acc); });
  }
  int64_t lora_workspace_elems(int64_t r, int64_t out) const override {
    return in_.lora_workspace_elems(r, out);
  }
  void lora_linear_forward(const Tensor& x, const Tensor& w, const Tensor* b, const LoraBranch& l,
                           const Tensor& y) override {
    time("GEMM LoRA linear fwd", [&] { in_.lora_linear_forward(x, w, b, l, y); });
  }
  void lora_linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                            const Tensor* dw, const Tensor* db, const LoraBranch& l, bool acc) override {
    time("GEMM LoRA linear bwd", [&] { in_.lora_linear_backward(dy, x, w, dx, dw, db, l, acc); });
  }
  void rope_forward(const Tensor& x, const int32_t* pos, const RopeParams& p) override {
    time("rope fwd", [&] { in_.rope_forward(x, pos, p); });
  }
  void rope_backward(const Tensor& dx, const int32_t* pos, const RopeParams& p) override {
    time("rope bwd", [&] { in_.rope_backward(dx, pos, p); });
  }
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse, const AttentionParams& p) override {
    time("attention fwd", [&] { in_.attention_forward(q, k, v, out, lse, p); });
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                          const Tensor& dv, const AttentionParams& p) override {
    time("attention bwd", [&] { in_.attention_backward(dout, q, k, v, out, lse, dq, dk, dv, p); });
  }
  void swiglu_forward(const Tensor& g, const Tensor& u, const Tensor& a) override {
    time("swiglu fwd", [&] { in_.swiglu_forward(g, u, a); });
  }
  void swiglu_backward(const Tensor& da, const Tensor& g, const Tensor& u, const Tensor& dg,
                       const Tensor& du) override {
    time("swiglu bwd", [&] { in_.swiglu_backward(da, g, u, dg, du); });
  }
  double cross_entropy_forward_backward(const Tensor& logits, const int32_t* labels, float scale) override {
    return time("cross-entropy", [&] { return in_.cross_entropy_forward_backward(logits, labels, scale); });
  }
  CrossEntropyStats cross_entropy_forward(const Tensor& logits, const int32_t* labels) override {
    return time("cross-entropy", [&] { return in_.cross_entropy_forward(logits, labels); });
  }
  void add_inplace(const Tensor& y, const Tensor& x) override {
    time("add (residual)", [&] { in_.add_inplace(y, x); });
  }
  void scale_inplace(const Tensor& y, float s) override {
    time("scale", [&] { in_.scale_inplace(y, s); });
  }
  void fill_zero(const Tensor& y) override {
    time("fill_zero", [&] { in_.fill_zero(y); });
  }
  void copy(const Tensor& d, const Tensor& s) override {
    time("copy", [&] { in_.copy(d, s); });
  }
  void copy_columns(const Tensor& d, int64_t dc, const Tensor& s, int64_t sc, int64_t cols) override {
    time("copy", [&] { in_.copy_columns(d, dc, s, sc, cols); });
  }
  double sum_squares(const Tensor& x) override {
    return time("sum_squares", [&] { return in_.sum_squares(x); });
  }
  void round_to_precision(const Tensor& t, DType p) override {
    time("round_to_precision", [&] { in_.round_to_precision(t, p); });
  }
  void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                  const AdamWParams& p, const Tensor* master) override {
    time("adamw", [&] { in_.adamw_step(param, grad, m, v, p, master); });
  }

 private:
  Backend& in_;
  int64_t vocab_;
  std::map<std::string, Tally> t_;
};

}  // namespace miniseq::bench
