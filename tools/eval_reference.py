#!/usr/bin/env python3
"""Writes the evaluation and generation references in tests/data/eval/ with the real Hugging Face stack.

For the tiny golden models of tests/data/golden/ (written by make_goldens.py):
  - a token stream (uint16 ids, seeded) and, per case (model, seq_len, stride, batch, RoPE factor), the strided
    perplexity of Hugging Face's "Perplexity of fixed-length models" recipe with each token scored at most once: the summed
    loss (float64 log-softmax of transformers' float32 logits), the count of scored tokens and of argmax hits;
  - greedy generation with transformers' own `generate` (KV cache, sliding-window cache for Mistral) from fixed
    prompts: the new token ids.
Run it with the venv of tools/setup-venv.sh:

    tools/setup-venv.sh && tools/.venv/bin/python tools/eval_reference.py

The output is committed; `make test` never runs Python. docs/eval.md describes the cases.
"""

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden"
OUT = ROOT / "tests" / "data" / "eval"

STREAM_TOKENS = 203  # prime, so no window length or stride divides it
VOCAB = 131  # the golden models' vocabulary

# (model, seq_len, stride, batch, rope_scaling_factor or None)
EVAL_CASES = [
    ("llama_basic", 48, 48, 1, None),  # disjoint windows, last one short
    ("llama_basic", 48, 20, 3, None),  # overlapping windows, batched, partial last batch
    ("llama_basic", 64, 17, 2, 4.0),  # --rope_scaling_factor replacing the config's (none) by linear 4
    ("llama_rope_linear", 40, 13, 2, None),  # the config's own linear scaling
    ("mistral_window", 48, 16, 2, None),  # sliding window 8 < seq_len
    ("qwen2_bias_tied", 32, 32, 4, None),  # biases, tied embeddings
    ("llama_attn_bias", 50, 25, 1, None),
    # RoPE types and Qwen3 (docs/rope.md): windows longer than original_max_position_embeddings (llama3: 32, yarn:
    # 16 and 24) and than max_position_embeddings for dynamic NTK (32; the last window, 11 tokens, is below it, so
    # transformers resets to the default frequencies there, as miniseq's per-call rule does).
    ("llama31_rope_llama3", 48, 16, 2, None),
    ("qwen2_rope_yarn", 56, 28, 2, None),
    ("llama_rope_dynamic", 48, 48, 1, None),
    ("qwen3_tied", 40, 20, 3, None),
    ("qwen3_yarn_bias", 60, 30, 1, None),
]

# (model, prompt ids, new tokens): 5 + 40 > 2 * window + prompt for mistral_window, so miniseq's sliding-window cache
# compacts during generation.
GEN_CASES = [
    ("llama_basic", [5, 6, 7, 8, 9], 24),
    ("mistral_window", [5, 6, 7, 8, 9], 40),
    ("qwen2_bias_tied", [100, 3, 77], 24),
    ("llama_rope_linear", [1, 50, 60, 70, 80, 90, 100, 110], 24),
    # Past original_max_position_embeddings (32, 16, 24) and, for dynamic NTK, past max_position_embeddings (32)
    # during decoding. transformers' dynamic NTK gives different tokens with and without the KV cache (cached keys
    # keep the frequencies they were rotated with): both are recorded.
    ("llama31_rope_llama3", [5, 6, 7, 8, 9], 40),
    ("qwen2_rope_yarn", [100, 3, 77], 30),
    ("llama_rope_dynamic", [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24], 30),
    ("qwen3_tied", [100, 3, 77], 24),
    ("qwen3_yarn_bias", [1, 2, 3, 4, 5, 6], 30),
]


def load(name, rope_factor=None):
    path = GOLDEN / name / "model"
    config = AutoConfig.from_pretrained(path)
    if rope_factor is not None:
        theta = config.rope_parameters["rope_theta"]
        config.rope_parameters = {"rope_type": "linear", "factor": rope_factor, "rope_theta": theta}
    model = AutoModelForCausalLM.from_pretrained(
        path, config=config, torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return model


def windows(n, seq_len, stride):
    """HF's strided recipe: (begin, end, first scored token); a token is scored at most once, and a window's first
    token never (it has no context in the window; HF's labels are shifted inside the model)."""
    out, prev_end = [], 1
    for begin in range(0, n, stride):
        end = min(begin + seq_len, n)
        first = max(prev_end, begin + 1)
        if end > first:
            out.append((begin, end, first))
        prev_end = max(prev_end, end)
        if end == n:
            break
    return out


def evaluate(model, stream, seq_len, stride, batch):
    ws = windows(len(stream), seq_len, stride)
    loss_sum, scored, correct = 0.0, 0, 0
    # Batches of equal-length consecutive windows, as miniseq forms them.
    groups = []
    for w in ws:
        if not groups or len(groups[-1]) == batch or (groups[-1][0][1] - groups[-1][0][0]) != (w[1] - w[0]):
            groups.append([])
        groups[-1].append(w)
    with torch.no_grad():
        for g in groups:
            ids = torch.tensor(np.stack([stream[b:e] for b, e, _ in g]).astype(np.int64))
            logits = model(input_ids=ids).logits  # [B, S, V] float32
            logp = torch.log_softmax(logits.double(), dim=-1)
            for row, (b, e, first) in enumerate(g):
                for t in range(first, e):  # token t is predicted at position t - 1 - b
                    s = t - 1 - b
                    assert s >= 0
                    loss_sum -= logp[row, s, stream[t]].item()
                    correct += int(logits[row, s].argmax().item() == stream[t])
                    scored += 1
    return dict(windows=len(ws), scored=scored, loss_sum=loss_sum, correct=correct)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261129)
    stream = rng.integers(0, VOCAB, size=STREAM_TOKENS).astype(np.uint16)
    stream.tofile(OUT / "stream.bin")
    ref = dict(
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        stream="stream.bin",
        stream_tokens=STREAM_TOKENS,
        eval=[],
        generation=[],
    )
    for name, seq_len, stride, batch, factor in EVAL_CASES:
        r = evaluate(load(name, factor), stream.astype(np.int64), seq_len, stride, batch)
        mean = r["loss_sum"] / r["scored"]
        case = dict(model=name, seq_len=seq_len, stride=stride, batch=batch, rope_scaling_factor=factor or 0.0)
        case.update(r, loss=mean, perplexity=float(np.exp(mean)), accuracy=r["correct"] / r["scored"])
        ref["eval"].append(case)
        print(f"eval {name} S={seq_len} stride={stride} B={batch} rope={factor}: ppl {case['perplexity']:.6f}, "
              f"acc {case['accuracy']:.4f} over {r['scored']} tokens")
    for name, prompt, new in GEN_CASES:
        model = load(name)
        model.generation_config.eos_token_id = None  # generate exactly `new` tokens
        model.generation_config.pad_token_id = 0
        runs = {}
        for use_cache in (True, False):
            model = load(name)  # a fresh model: dynamic NTK keeps state between calls
            model.generation_config.eos_token_id = None
            model.generation_config.pad_token_id = 0
            with torch.no_grad():
                out = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, use_cache=use_cache)
            runs[use_cache] = out[0, len(prompt):].tolist()
        ref["generation"].append(dict(model=name, prompt_ids=prompt, max_new_tokens=new, new_ids=runs[True],
                                      new_ids_no_cache=runs[False]))
        print(f"generate {name}: {runs[True]}" + ("" if runs[True] == runs[False] else f" (no cache: {runs[False]})"))
    (OUT / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(f"wrote {OUT / 'reference.json'}")


if __name__ == "__main__":
    main()
