#include "support/reference_ops.h"

#include <cassert>
#include <cmath>

#include "miniseq/ops/attention_mask.h"

namespace miniseq::ref {

namespace {
size_t z(int64_t i) {
  return static_cast<size_t>(i);
}
}  // namespace

Vec embedding_forward(const std::vector<int32_t>& ids, const Vec& table, int64_t d) {
  Vec out(ids.size() * z(d));
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < d; ++c) out[t * z(d) + z(c)] = table[z(ids[t]) * z(d) + z(c)];
  return out;
}

Vec embedding_backward(const std::vector<int32_t>& ids, const Vec& dout, int64_t V, int64_t d) {
  Vec dt(z(V * d), 0.0);
  for (size_t t = 0; t < ids.size(); ++t)
    for (int64_t c = 0; c < d; ++c) dt[z(ids[t]) * z(d) + z(c)] += dout[t * z(d) + z(c)];
  return dt;
}

void rmsnorm_forward(const Vec& x, const Vec& w, int64_t d, double eps, Vec& y, Vec& rstd) {
  const int64_t T = static_cast<int64_t>(x.size()) / d;
  y.assign(x.size(), 0.0);
  rstd.assign(z(T), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0.0;
    for (int64_t c = 0; c < d; ++c) ss += x[z(t * d + c)] * x[z(t * d + c)];
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    rstd[z(t)] = r;
    for (int64_t c = 0; c < d; ++c) y[z(t * d + c)] = w[z(c)] * x[z(t * d + c)] * r;
  }
}

void rmsnorm_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t d, double eps, Vec& dx, Vec& dw) {
  const int64_t T = static_cast<int64_t>(x.size()) / d;
  dx.assign(x.size(), 0.0);
  dw.assign(z(d), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0.0, gx = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      ss += x[z(t * d + c)] * x[z(t * d + c)];
      gx += dy[z(t * d + c)] * w[z(c)] * x[z(t * d + c)];
    }
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    for (int64_t c = 0; c < d; ++c) {
      const double xc = x[z(t * d + c)], gc = dy[z(t * d + c)] * w[z(c)];
      dx[z(t * d + c)] = r * gc - xc * r * r * r * gx / static_cast<double>(d);
      dw[z(c)] += dy[z(t * d + c)] * xc * r;
    }
  }
}

Vec linear_forward(const Vec& x, const Vec& w, const Vec& b, int64_t in, int64_t out) {
  const int64_t T = static_cast<int64_t>(x.size()) / in;
  Vec y(z(T * out));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[z(o)];
      for (int64_t c = 0; c < in; ++c) s += x[z(t * in + c)] * w[z(o * in + c)];
      y[z(t * out + o)] = s;
    }
  return y;
}

void linear_backward(const Vec& dy, const Vec& x, const Vec& w, int64_t in, int64_t out, Vec& dx, Vec& dw,
                     Vec& db) {
  const int64_t T = static_cast<int64_t>(x.size()) / in;
  dx.assign(z(T * in), 0.0);
  dw.assign(z(out * in), 0.0);
  db.assign(z(out), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      const double g = dy[z(t * out + o)];
      db[z(o)] += g;
      for (int64_t c = 0; c < in; ++c) {
        dx[z(t * in + c)] += g * w[z(o * in + c)];
        dw[z(o * in + c)] += g * x[z(t * in + c)];
      }
    }
}

namespace {
Vec rope_apply(const Vec& x, const std::vector<int32_t>& pos, int64_t B, int64_t S, int64_t Hx, int64_t D,
               double theta, double factor, double sign) {
  Vec y(x.size());
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < Hx; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double ang = pos[z(s)] / factor * std::pow(theta, -2.0 * static_cast<double>(i) / D);
          const double c = std::cos(ang), sn = sign * std::sin(ang);
          const size_t o = z(((b * S + s) * Hx + h) * D + i);
          const double x1 = x[o], x2 = x[o + z(half)];
          y[o] = x1 * c - x2 * sn;
          y[o + z(half)] = x2 * c + x1 * sn;
        }
  return y;
}
}  // namespace

Vec rope_forward(const Vec& x, const std::vector<int32_t>& pos, int64_t B, int64_t S, int64_t Hx, int64_t D,
                 double theta, double factor) {
  return rope_apply(x, pos, B, S, Hx, D, theta, factor, 1.0);
}
Vec rope_backward(const Vec& dy, const std::vector<int32_t>& pos, int64_t B, int64_t S, int64_t Hx, int64_t D,
                  double theta, double factor) {
  return rope_apply(dy, pos, B, S, Hx, D, theta, factor, -1.0);
}

namespace {
// Softmax probabilities of query (b, i, h) over all keys: p [S], returns lse.
double attention_row(const Vec& q, const Vec& k, const AttnShape& a, int64_t b, int64_t i, int64_t h,
                     Vec& p) {
  const AttentionMask mask = AttentionMask{a.S, a.causal, a.window, 0, a.group}.for_head(h, a.H);
  const double scale = a.scale != 0.0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(a.D));
  const int64_t kvh = h / (a.H / a.Hkv);
  p.assign(z(a.S), 0.0);
  double mx = -INFINITY;
  for (int64_t j = 0; j < a.S; ++j) {
    if (!mask.allowed(i, j)) continue;
    double s = 0.0;
    for (int64_t c = 0; c < a.D; ++c)
      s += q[z(((b * a.S + i) * a.H + h) * a.D + c)] * k[z(((b * a.S + j) * a.Hkv + kvh) * a.D + c)];
    p[z(j)] = s * scale;
    mx = std::max(mx, p[z(j)]);
  }
  double sum = 0.0;
  for (int64_t j = 0; j < a.S; ++j) {
    p[z(j)] = mask.allowed(i, j) ? std::exp(p[z(j)] - mx) : 0.0;
    sum += p[z(j)];
  }
  for (int64_t j = 0; j < a.S; ++j) p[z(j)] /= sum;
  return mx + std::log(sum);
}
}  // namespace

void attention_forward(const Vec& q, const Vec& k, const Vec& v, const AttnShape& a, Vec& out, Vec& lse) {
  out.assign(q.size(), 0.0);
  lse.assign(z(a.B * a.H * a.S), 0.0);
  Vec p;
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i = 0; i < a.S; ++i) {
        lse[z((b * a.H + h) * a.S + i)] = attention_row(q, k, a, b, i, h, p);
        const int64_t kvh = h / (a.H / a.Hkv);
        for (int64_t c = 0; c < a.D; ++c) {
          double s = 0.0;
          for (int64_t j = 0; j < a.S; ++j) s += p[z(j)] * v[z(((b * a.S + j) * a.Hkv + kvh) * a.D + c)];
          out[z(((b * a.S + i) * a.H + h) * a.D + c)] = s;
        }
      }
}

void attention_backward(const Vec& dout, const Vec& q, const Vec& k, const Vec& v, const AttnShape& a,
                        Vec& dq, Vec& dk, Vec& dv) {
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  const double scale = a.scale != 0.0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(a.D));
  Vec p, dp(z(a.S));
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i = 0; i < a.S; ++i) {
        attention_row(q, k, a, b, i, h, p);
        const int64_t kvh = h / (a.H / a.Hkv);
        const size_t qo = z(((b * a.S + i) * a.H + h) * a.D);
        // dP_j = dO · V_j ;  dS_j = P_j (dP_j − Σ_l P_l dP_l)
        double pdp = 0.0;
        for (int64_t j = 0; j < a.S; ++j) {
          double s = 0.0;
          for (int64_t c = 0; c < a.D; ++c)
            s += dout[qo + z(c)] * v[z(((b * a.S + j) * a.Hkv + kvh) * a.D + c)];
          dp[z(j)] = s;
          pdp += p[z(j)] * s;
        }
        for (int64_t j = 0; j < a.S; ++j) {
          if (p[z(j)] == 0.0) continue;
          const double ds = p[z(j)] * (dp[z(j)] - pdp) * scale;
          const size_t ko = z(((b * a.S + j) * a.Hkv + kvh) * a.D);
          for (int64_t c = 0; c < a.D; ++c) {
            dq[qo + z(c)] += ds * k[ko + z(c)];
            dk[ko + z(c)] += ds * q[qo + z(c)];
            dv[ko + z(c)] += p[z(j)] * dout[qo + z(c)];
          }
        }
      }
}

Vec swiglu_forward(const Vec& gate, const Vec& up) {
  Vec a(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) a[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return a;
}

void swiglu_backward(const Vec& dact, const Vec& gate, const Vec& up, Vec& dgate, Vec& dup) {
  dgate.resize(gate.size());
  dup.resize(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-gate[i]));
    dgate[i] = dact[i] * up[i] * s * (1.0 + gate[i] * (1.0 - s));
    dup[i] = dact[i] * gate[i] * s;
  }
}

double cross_entropy(const Vec& logits, const std::vector<int32_t>& labels, int64_t V, double scale,
                     Vec& dlogits) {
  dlogits.assign(logits.size(), 0.0);
  double loss = 0.0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] == -100) continue;
    const double* x = logits.data() + r * z(V);
    double mx = -INFINITY, sum = 0.0;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, x[j]);
    for (int64_t j = 0; j < V; ++j) sum += std::exp(x[j] - mx);
    const double lse = mx + std::log(sum);
    loss += lse - x[labels[r]];
    for (int64_t j = 0; j < V; ++j) dlogits[r * z(V) + z(j)] = std::exp(x[j] - lse) * scale;
    dlogits[r * z(V) + z(labels[r])] -= scale;
  }
  return loss;
}

void adamw_step(Vec& param, const Vec& grad, Vec& m, Vec& v, const AdamW& p) {
  const double bc1 = 1.0 - std::pow(p.beta1, static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(p.beta2, static_cast<double>(p.step));
  for (size_t i = 0; i < param.size(); ++i) {
    const double g = grad[i] * p.grad_scale;
    param[i] *= 1.0 - p.lr * p.weight_decay;
    m[i] = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    v[i] = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    const double mhat = m[i] / bc1, vhat = v[i] / bc2;
    param[i] -= p.lr * mhat / (std::sqrt(vhat) + p.eps);
  }
}

}  // namespace miniseq::ref
