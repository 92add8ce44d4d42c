#!/usr/bin/env python3
"""Writes tests/data/rope/reference.json: transformers' own RoPE inverse frequencies and cos/sin scale for every
rope_type miniseq reads, on the real configs in bench/configs/ and on small ones that reach every branch.

For each case, the model's rotary-embedding module is built from the config by transformers itself and run on
position_ids 0 .. seq_len-1 (so the dynamic-NTK update happens exactly as in a forward pass); its inv_freq (fp32,
written as exact decimal doubles) and attention_scaling are recorded. tests/test_rope_scaling.cpp compares
model/rope_scaling.cpp with them. Run with the venv of tools/setup-venv.sh:

    tools/setup-venv.sh && tools/.venv/bin/python tools/rope_reference.py
"""

import json
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "rope" / "reference.json"
ROTARY = {"llama": LlamaRotaryEmbedding, "qwen2": Qwen2RotaryEmbedding, "qwen3": Qwen3RotaryEmbedding}

SMALL = dict(model_type="llama", hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             intermediate_size=56, num_hidden_layers=1, vocab_size=131, max_position_embeddings=32)

# (name, config.json dict, seq_len)
CASES = [(f"bench/configs/{n}", json.loads((ROOT / "bench" / "configs" / n).read_text()), s)
         for n, s in [("llama-3.1-8b.json", 1024), ("llama-3.2-1b.json", 1024), ("qwen2.5-7b-yarn.json", 1024),
                      ("qwen3-8b.json", 1024), ("llama-3-8b.json", 1024)]]
CASES += [
    ("llama3 small", dict(SMALL, rope_scaling=dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0,
                                                   high_freq_factor=4.0, original_max_position_embeddings=32)), 64),
    ("llama3 uneven factors", dict(SMALL, rope_theta=500000.0, rope_scaling=dict(
        rope_type="llama3", factor=3.0, low_freq_factor=1.5, high_freq_factor=7.0,
        original_max_position_embeddings=40)), 64),
    ("yarn small", dict(SMALL, rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                                   original_max_position_embeddings=32)), 64),
    ("yarn mscale", dict(SMALL, rope_scaling=dict(type="yarn", factor=8.0, original_max_position_embeddings=16,
                                                 mscale=0.707, mscale_all_dim=1.0, beta_fast=16, beta_slow=2)), 64),
    ("yarn no truncate, attention factor", dict(SMALL, rope_scaling=dict(
        rope_type="yarn", factor=2.5, original_max_position_embeddings=24, truncate=False,
        attention_factor=1.25)), 64),
    ("yarn original from max_position_embeddings", dict(SMALL, rope_scaling=dict(rope_type="yarn", factor=2.0)), 64),
    ("linear", dict(SMALL, rope_scaling=dict(type="linear", factor=3.0)), 64),
]
for s in (16, 32, 33, 57, 100, 1000):
    CASES.append((f"dynamic seq_len {s}", dict(SMALL, rope_scaling=dict(type="dynamic", factor=2.0)), s))
CASES.append(("dynamic theta 5e5 seq_len 777", dict(SMALL, rope_theta=500000.0, max_position_embeddings=100,
                                                      rope_scaling=dict(rope_type="dynamic", factor=3.5)), 777))


def main():
    torch.set_num_threads(1)
    out = dict(transformers_version=transformers.__version__, torch_version=torch.__version__, cases=[])
    for name, cfg, seq_len in CASES:
        config = AutoConfig.for_model(**cfg)
        rotary = ROTARY[cfg["model_type"]](config=config)
        x = torch.zeros(1, 1, dtype=torch.float32)
        with torch.no_grad():
            rotary(x, torch.arange(seq_len)[None])
        inv = rotary.inv_freq.to(torch.float32)
        out["cases"].append(dict(name=name, config=cfg, seq_len=seq_len, inv_freq=[float(v) for v in inv.tolist()],
                                 attention_scaling=float(torch.tensor(rotary.attention_scaling, dtype=torch.float32))))
        print(f"{name:40s} seq_len {seq_len:5d} D/2 {inv.numel():3d} scaling {rotary.attention_scaling:.9g}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
