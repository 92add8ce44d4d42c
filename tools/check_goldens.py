#!/usr/bin/env python3
"""Independent check of tests/data/golden/: a from-scratch float64 Llama/Mistral/Qwen2/Qwen3 forward written with plain
torch (no transformers), run on the committed files only, must reproduce loss_f64 and grads_f64.safetensors.

It doubles as an executable spec of what the C++ engine computes: config parsing in both formats (classic
rope_theta/rope_scaling and transformers-5 rope_parameters), tied embeddings, GQA, RoPE (rotate-half pairing, HF's
fp32 tables; linear, dynamic NTK, YaRN and llama3 frequencies from their published formulas, evaluated in fp32),
Qwen3's per-head q/k RMSNorm, q/k/v/o biases, the sliding window, the embedding's padding_idx (= pad_token_id: lookups
of the pad id add no gradient), and the shifted mean cross-entropy over labels != -100. The S²-Attn goldens
(tests/data/golden/s2/, docs/s2attn.md) are checked with the group rule written as "a key at or after the start of
the query's group", another formulation than tools/s2_attn_reference.py's group numbers.

    tools/.venv/bin/python tools/check_goldens.py
"""

import json
import math
import sys
from pathlib import Path

import torch
from safetensors import safe_open

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden"


def read_config(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    rope = cfg.get("rope_parameters") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or rope
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    assert rope_type in ("default", "linear", "dynamic", "yarn", "llama3"), rope_type
    rope_cfg = dict(scaling, rope_type=rope_type, max_pos=cfg["max_position_embeddings"])
    rope_cfg.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
    heads = cfg["num_attention_heads"]
    return dict(
        d=cfg["hidden_size"],
        layers=cfg["num_hidden_layers"],
        heads=heads,
        kv_heads=cfg.get("num_key_value_heads", heads),
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        eps=cfg["rms_norm_eps"],
        theta=theta,
        rope=rope_cfg,
        window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
        tied=cfg.get("tie_word_embeddings", False),
        padding_idx=cfg.get("pad_token_id"),
    )


def read_weights(model_dir):
    w = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, "pt") as f:
            w.update({k: f.get_tensor(k).to(torch.float64).requires_grad_() for k in f.keys()})
    return w


def inv_freq(c, s):
    """RoPE inverse frequencies [D/2] (fp32) and the cos/sin scale for a sequence of s positions."""
    r, dd = c["rope"], c["head_dim"]
    expo = torch.arange(0, dd, 2, dtype=torch.float32) / dd  # 2i / D
    plain = 1.0 / (c["theta"] ** expo)
    kind = r["rope_type"]
    if kind == "linear":  # position interpolation: every frequency divided by the factor
        return plain / r["factor"], 1.0
    if kind == "dynamic":  # NTK: past max_position_embeddings, base · (f·s/max − (f − 1))^(D/(D−2))
        if s <= r["max_pos"]:
            return plain, 1.0
        grow = (r["factor"] * torch.tensor(s) / r["max_pos"]) - (r["factor"] - 1)
        return 1.0 / ((c["theta"] * grow ** (dd / (dd - 2))) ** expo), 1.0
    if kind == "llama3":  # three bands by wavelength: keep, divide by the factor, or blend smoothly
        f, lo, hi, old = r["factor"], r["low_freq_factor"], r["high_freq_factor"], r["original_max_position_embeddings"]
        wavelen = 2 * math.pi / plain
        scaled = torch.where(wavelen > old / lo, plain / f, plain)
        smooth = (old / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / f + smooth * scaled
        medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
        return torch.where(medium, blended, scaled), 1.0
    if kind == "yarn":  # NTK-by-parts: interpolate the dimensions below the ramp, extrapolate above it
        f, orig = r["factor"], r["original_max_position_embeddings"]
        beta_fast, beta_slow = r.get("beta_fast") or 32, r.get("beta_slow") or 1

        def dim_of(rotations):  # the dimension that turns `rotations` times over the original context
            return (dd * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(c["theta"]))

        low, high = dim_of(beta_fast), dim_of(beta_slow)
        if r.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dd - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dd // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
        power = c["theta"] ** expo
        extrapolate = 1 - ramp
        inv = (1.0 / (f * power)) * (1 - extrapolate) + (1.0 / power) * extrapolate

        def mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if r.get("attention_factor") is not None:
            att = r["attention_factor"]
        elif r.get("mscale") and r.get("mscale_all_dim"):
            att = mscale(f, r["mscale"]) / mscale(f, r["mscale_all_dim"])
        else:
            att = mscale(f)
        return inv, att
    return plain, 1.0


def rope_tables(c, s):
    # HF: inv_freq and angles in fp32, cos/sin in fp32 (times YaRN's scale), then cast to the model dtype.
    inv, scale = inv_freq(c, s)
    ang = torch.arange(s, dtype=torch.float32)[:, None] * inv[None, :]  # [S, D/2]
    ang = torch.cat([ang, ang], dim=-1)  # [S, D]: rotate-half pairing (i, i + D/2)
    return (ang.cos() * scale).double(), (ang.sin() * scale).double()


def rotate(x, cos, sin):  # x [B, H, S, D]
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def forward_loss(c, w, ids, labels, s2=False):
    b, s = ids.shape
    h, hkv, dd = c["heads"], c["kv_heads"], c["head_dim"]
    cos, sin = rope_tables(c, s)
    i = torch.arange(s)[:, None]
    j = torch.arange(s)[None, :]
    allowed = j <= i
    if c["window"] is not None:
        allowed &= i - j < c["window"]
    if s2:  # S²-Attn (docs/s2attn.md): a key at or after the start of the query's group; heads >= H // 2 shifted
        g = max(1, s // 4)
        per_head = []
        for n in range(h):
            shift = g // 2 if n >= h // 2 else 0
            start = torch.where(i < shift, 0, i - (i - shift) % g)  # first position of query i's group
            per_head.append(allowed & (j >= start))
        allowed = torch.stack(per_head)  # [H, S, S]
    # [B, S, d]; with padding_idx the pad id's lookups carry no gradient to the table (nn.Embedding's rule)
    x = torch.nn.functional.embedding(ids, w["model.embed_tokens.weight"], padding_idx=c["padding_idx"])

    def lin(name, t):
        y = t @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    for layer in range(c["layers"]):
        p = f"model.layers.{layer}."
        hn = rmsnorm(x, w[p + "input_layernorm.weight"], c["eps"])
        q = lin(p + "self_attn.q_proj", hn).view(b, s, h, dd)
        k = lin(p + "self_attn.k_proj", hn).view(b, s, hkv, dd)
        if p + "self_attn.q_norm.weight" in w:  # Qwen3: RMSNorm over each head, before RoPE
            q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], c["eps"])
            k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], c["eps"])
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = lin(p + "self_attn.v_proj", hn).view(b, s, hkv, dd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k = k.repeat_interleave(h // hkv, dim=1)  # query head n uses kv head n // (H / Hkv)
        v = v.repeat_interleave(h // hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / dd**0.5
        scores = scores.masked_fill(~allowed, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v  # [B, H, S, D]
        x = x + lin(p + "self_attn.o_proj", att.transpose(1, 2).reshape(b, s, h * dd))
        hn = rmsnorm(x, w[p + "post_attention_layernorm.weight"], c["eps"])
        gate, up = lin(p + "mlp.gate_proj", hn), lin(p + "mlp.up_proj", hn)
        x = x + lin(p + "mlp.down_proj", torch.nn.functional.silu(gate) * up)
    x = rmsnorm(x, w["model.norm.weight"], c["eps"])
    head = w["model.embed_tokens.weight"] if c["tied"] else w["lm_head.weight"]
    logits = x @ head.T  # [B, S, V]
    targets = labels[:, 1:]  # position t predicts label t + 1
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="mean"
    )


def check_case(case_dir, s2=False):
    model_dir = case_dir / "model"
    c = read_config(model_dir)
    w = read_weights(model_dir)
    rows = [json.loads(line) for line in open(case_dir / "batch.jsonl")]
    ids = torch.tensor([r["input_ids"] for r in rows])
    labels = torch.tensor([r["labels"] for r in rows])
    loss = forward_loss(c, w, ids, labels, s2)
    loss.backward()
    with safe_open(case_dir / "grads_f64.safetensors", "pt") as f:
        ref_loss = float(f.metadata()["loss_f64"])
        assert set(f.keys()) == set(w), set(f.keys()) ^ set(w)
        errs = {}
        for k in f.keys():
            ref = f.get_tensor(k).double()
            errs[k] = ((w[k].grad - ref).norm() / ref.norm()).item()
    worst = max(errs, key=errs.get)
    return abs(loss.item() - ref_loss) / ref_loss, errs[worst], worst


def main():
    torch.set_num_threads(1)
    ok = True
    cases = [(p, False) for p in sorted(GOLDEN.iterdir()) if (p / "case.json").exists()]
    s2_dir = GOLDEN / "s2"  # S²-Attn goldens (tools/s2_attn_reference.py)
    if s2_dir.exists():
        cases += [(p, True) for p in sorted(s2_dir.iterdir()) if (p / "case.json").exists()]
    for case_dir, s2 in cases:
        loss_err, grad_err, worst = check_case(case_dir, s2)
        # grads_f64 is stored as F32: 6e-8 relative rounding; the loss is kept as an exact f64 repr.
        good = loss_err < 1e-12 and grad_err < 1e-7
        ok &= good
        name = ("s2/" if s2 else "") + case_dir.name
        print(f"{'ok  ' if good else 'FAIL'} {name:22s} loss rel {loss_err:.1e}  grad rel {grad_err:.1e} ({worst})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
