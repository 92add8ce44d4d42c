#!/usr/bin/env python3
"""PyTorch's best configuration on the benchmark model, measured rather than assumed (issue 9).

The 125M-parameter Llama of bench/bench_step_cpu (hidden 768, 12 layers, 12 heads, 4 kv heads, intermediate 2048,
vocab 32000, fp32, batch 1) trained with Hugging Face transformers + torch from PyPI: one training step = forward +
backward + AdamW. Variants: plain; gradient checkpointing; gradient checkpointing + a chunked loss (the LM head and
cross-entropy over chunks, each recomputed in backward); plain under torch.autocast("cpu", bfloat16) (fp32 weights,
bf16 matmuls: PyTorch's counterpart of miniseq's --bf16 True, fast only on CPUs with AVX512-BF16 or AMX); each with glibc malloc, tcmalloc and jemalloc preloaded
(when the Debian packages libgoogle-perftools4 / libjemalloc2 are installed). Each (variant, allocator, S) runs in
its own process, so that its peak RSS is its own. Same thread count as miniseq (all cores).

    tools/.venv/bin/python bench/torch_reference.py [--seq 1024 4096 8192] [--steps 3] [--json out.json]
        [--variants plain ckpt ckpt+chunked_loss plain+autocast_bf16] [--allocators glibc tcmalloc jemalloc]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ALLOCATORS = {
    "glibc": None,
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
}
VARIANTS = ["plain", "ckpt", "ckpt+chunked_loss", "plain+autocast_bf16"]


def worker(variant, seq, steps):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    cfg = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=max(seq, 2048),
                      rms_norm_eps=1e-5, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).float().train()
    if variant.startswith("ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(0, 32000, (1, seq))

    def chunked_loss(hidden, labels, chunks=42):
        # LM head + CE over chunks of rows, each recomputed in backward (MsT's LM-head chunking in plain PyTorch).
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        y = labels[:, 1:].reshape(-1)
        total = h.new_zeros(())
        n = (y != -100).sum()
        for hc, yc in zip(h.chunk(chunks), y.chunk(chunks)):
            def piece(hc, yc=yc):
                return torch.nn.functional.cross_entropy(model.lm_head(hc).float(), yc, reduction="sum")
            total = total + torch.utils.checkpoint.checkpoint(piece, hc, use_reentrant=False)
        return total / n

    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.endswith("autocast_bf16")):
            if variant == "ckpt+chunked_loss":
                hidden = model.model(input_ids=ids).last_hidden_state
                loss = chunked_loss(hidden, ids)
            else:
                loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    best = min(times[1:])  # the first step warms up
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"variant": variant, "seq": seq, "seconds": best, "tokens_per_second": seq / best,
                      "peak_rss_bytes": peak, "loss": float(loss)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--json", default="")
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=list(ALLOCATORS))
    ap.add_argument("--worker", nargs=2)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.steps)
        return 0
    rows = []
    for seq in args.seq:
        for variant in args.variants:
            for alloc in args.allocators:
                lib = ALLOCATORS[alloc]
                if lib and not os.path.exists(lib):
                    continue
                env = dict(os.environ)
                if lib:
                    env["LD_PRELOAD"] = lib
                p = subprocess.run([sys.executable, __file__, "--worker", variant, str(seq), "--steps",
                                    str(args.steps)], env=env, capture_output=True, text=True)
                if p.returncode != 0:
                    row = {"variant": variant, "seq": seq, "allocator": alloc, "error": p.stderr.strip()[-300:]}
                else:
                    row = json.loads(p.stdout.strip().splitlines()[-1])
                    row["allocator"] = alloc
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
