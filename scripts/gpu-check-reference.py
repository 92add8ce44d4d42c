#!/usr/bin/env python3
"""The bf16 error model behind scripts/gpu-check.sh's comparisons of `eval` and `generate --device cuda` with
transformers (tests/data/eval/reference.json), written to scripts/gpu-check-bf16.json. Run with the venv of
tools/setup-venv.sh (not on the GPU machine; the output is committed):

    tools/.venv/bin/python scripts/gpu-check-reference.py

The golden models are tiny and random: their next-token distributions are nearly uniform (perplexity ~134 for a
131-token vocabulary), so greedy decoding often chooses between logits a few 1e-3 apart. For every generation case
this records, along transformers' fp32 greedy trajectory, the margin top1 - top2 of the logits at each new token,
and the bound T = 4u·max|z| (u = 2^-8) on the error of a logit difference in a bf16 computation (each logit carries
about 2u·max|z|: the bf16 rounding of the logit itself, u/2 relative, plus the roundings of the hidden state before
the LM head). It measures that bound on two bf16 implementations (transformers in bf16, eager and SDPA attention):
the largest error of a logit difference and where their greedy ids first leave the fp32 ones. A CUDA run may leave
the reference only at a step whose margin is below T (then everything after differs too: the context differs).
For the eval cases it records the perplexity of the same two bf16 runs relative to the fp32 reference.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import eval_reference as er  # noqa: E402

U = 2.0**-8
ATTN = ("eager", "sdpa")


def load(name, dtype, attn="eager"):
    m = AutoModelForCausalLM.from_pretrained(er.GOLDEN / name / "model", dtype=torch.float32,
                                             attn_implementation=attn)
    m.eval()
    return m.to(dtype)


def main():
    ref = json.loads((er.OUT / "reference.json").read_text())
    stream = np.fromfile(er.OUT / "stream.bin", dtype=np.uint16).astype(np.int64)
    out = dict(unit_roundoff=U, torch_version=torch.__version__, eval=[], generation=[])
    for c in ref["eval"]:
        if c["rope_scaling_factor"]:
            continue
        rel = {}
        for attn in ATTN:
            r = er.evaluate(load(c["model"], torch.bfloat16, attn), stream, c["seq_len"], c["stride"], c["batch"])
            rel[attn] = float(np.exp(r["loss_sum"] / r["scored"])) / c["perplexity"] - 1
        out["eval"].append(dict(model=c["model"], seq_len=c["seq_len"], stride=c["stride"], batch=c["batch"],
                                perplexity=c["perplexity"], bf16_relative_error=rel))
        print(f"eval {c['model']} S={c['seq_len']}: bf16 perplexity relative error {rel}")
    for g in ref["generation"]:
        name, prompt, new, ids = g["model"], g["prompt_ids"], g["max_new_tokens"], g["new_ids"]
        if ids != g["new_ids_no_cache"]:
            continue  # dynamic NTK: transformers itself differs with and without the cache
        seq = torch.tensor([prompt + ids])
        rows = slice(len(prompt) - 1, len(prompt) - 1 + new)
        with torch.no_grad():
            z = load(name, torch.float32)(input_ids=seq).logits[0].double()[rows]
            top2 = torch.topk(z, 2, dim=-1).values
            margins = (top2[:, 0] - top2[:, 1]).tolist()
            bound = 4 * U * float(z.abs().max())
            diff_err, first = {}, {}
            for attn in ATTN:
                m = load(name, torch.bfloat16, attn)
                e = m(input_ids=seq).logits[0].double()[rows] - z
                diff_err[attn] = float((e - e.gather(1, z.argmax(-1)[:, None])).abs().max())
                m.generation_config.eos_token_id = None
                m.generation_config.pad_token_id = 0
                got = m.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False)[0, len(prompt):]
                first[attn] = next((i for i, (a, b) in enumerate(zip(got.tolist(), ids)) if a != b), new)
        guaranteed = next((i for i, x in enumerate(margins) if x < bound), new)
        out["generation"].append(dict(model=name, prompt_ids=prompt, max_new_tokens=new, margins=margins,
                                      bound=bound, guaranteed_prefix=guaranteed,
                                      bf16_max_error_of_a_difference=diff_err, bf16_first_difference=first))
        print(f"generate {name}: bound {bound:.2e}, min margin {min(margins):.2e}, ids guaranteed for "
              f"{guaranteed}/{new}; bf16 error of a difference {diff_err}, bf16 first difference {first}")
    path = Path(__file__).resolve().parent / "gpu-check-bf16.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
