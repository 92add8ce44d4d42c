// Plain scalar double-precision references of every op in ops/backend.h (the specification the fast backends
// are tested against). Straight loops, no tiling, no tricks; the same layouts and conventions as
// ops/backend.h, with the same attention mask rule (ops/attention_mask.h). Gradients here are all WRITTEN
// (=), not accumulated.
//
// Dimension legend: B batch, S sequence, T rows, d hidden, V vocab, H heads, Hkv kv heads, D head_dim, C
// rows.
#pragma once

#include <cstdint>
#include <vector>

namespace miniseq::ref {

using Vec = std::vector<double>;

// table [V, d] -> out [T, d];  dtable [V, d] = scatter-add of dout [T, d]
Vec embedding_forward(const std::vector<int32_t>& ids, const Vec& table, int64_t d);
Vec embedding_backward(const std::vector<int32_t>& ids, const Vec& dout, int64_t V, int64_t d);

// x [T, d], w [d] -> y [T, d]; rstd [T]
void rmsnorm_forward(const Vec& x, const Vec& w, int64_t d, double eps, Vec& y, Vec& rstd);
void rmsnorm_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t d, double eps, Vec& dx, Vec& dw);

// x [T, in], w [out, in], b [out] or empty -> y [T, out]
Vec linear_forward(const Vec& x, const Vec& w, const Vec& b, int64_t in, int64_t out);
void linear_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t in, int64_t out, Vec& dx, Vec& dw,
                     Vec& db);

// x [B, S, Hx, D] rotated by the positions [S] (angles in double: pos / factor · theta^(−2i/D)).
Vec rope_forward(const Vec& x, const std::vector<int32_t>& pos, int64_t B, int64_t S, int64_t Hx, int64_t D,
                 double theta, double factor);
Vec rope_backward(const Vec& dy, const std::vector<int32_t>& pos, int64_t B, int64_t S, int64_t Hx, int64_t D,
                  double theta, double factor);

struct AttnShape {
  int64_t B, S, H, Hkv, D;
  bool causal = true;
  int64_t window = 0;
  double scale = 0.0;  // 0 = 1/sqrt(D)
  int64_t group = 0;   // S²-Attn group size (AttentionMask::group, per head via for_head); 0 = none
};
// q [B,S,H,D], k, v [B,S,Hkv,D] -> out [B,S,H,D], lse [B,H,S]; full softmax per row.
void attention_forward(const Vec& q, const Vec& k, const Vec& v, const AttnShape& a, Vec& out, Vec& lse);
void attention_backward(const Vec& dout, const Vec& q, const Vec& k, const Vec& v, const AttnShape& a,
                        Vec& dq, Vec& dk, Vec& dv);

Vec swiglu_forward(const Vec& gate, const Vec& up);
void swiglu_backward(const Vec& dact, const Vec& gate, const Vec& up, Vec& dgate, Vec& dup);

// logits [C, V], labels [C] (-100 ignored) -> Σ loss over valid rows; dlogits = (softmax − onehot)·scale, 0
// ignored.
double cross_entropy(const Vec& logits, const std::vector<int32_t>& labels, int64_t V, double scale,
                     Vec& dlogits);

struct AdamW {
  double lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, grad_scale = 1.0;
  int64_t step = 1;
};
// torch.optim.AdamW, one step, in place.
void adamw_step(Vec& param, const Vec& grad, Vec& m, Vec& v, const AdamW& p);

}  // namespace miniseq::ref
