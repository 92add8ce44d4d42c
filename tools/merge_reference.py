#!/usr/bin/env python3
"""Writes the merge and --peft_model references (tests/data/merge/) with transformers + peft.

For each LoRA golden case of make_lora_goldens.py (tests/data/golden/<case>/lora/adapter, its base model in
tests/data/golden/<case>/model):
  - trainable_params.safetensors: the LoRA+ tensors (the case's trainable_params substrings, LongLoRA's rule over
    PEFT's names) = base + 0.05·N(0, 1), seeded, under Hugging Face names (what `miniseq train` writes beside an
    adapter; LongLoRA's trainable_params.bin holds the same dict);
  - merged.safetensors: the model of LongLoRA's merge_lora_weights_and_save_hf_model.py in float32 on the CPU:
    base, load_state_dict(trainable, strict=False), PeftModel.from_pretrained, merge_and_unload(); every tensor
    of the state dict (a tied LM head once, as the embedding);
  - reference.json: the loss of the unmerged PEFT model (adapter + trainable params) over the whole of
    tests/data/eval/stream.bin as one window (float64 log-softmax of float32 logits), the number the eval test
    compares `miniseq eval --peft_model` with.

    tools/.venv/bin/python tools/merge_reference.py   # after make_lora_goldens.py; a few seconds

Deterministic (fixed seed, one thread).
"""

import json
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden"
OUT = ROOT / "tests" / "data" / "merge"
STREAM = ROOT / "tests" / "data" / "eval" / "stream.bin"
CASES = ["llama_basic", "mistral_window", "qwen2_bias_tied", "qwen3_tied"]
SEED = 2468


def load(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()


def trainable_params(model, keys, gen):
    """LongLoRA's LoRA+ set, from the names PEFT's model gives them, perturbed; keyed by Hugging Face name."""
    out = {}
    for name, p in model.named_parameters():  # named_parameters lists a tied matrix once
        if any(k in name for k in keys):
            out[name] = (p.detach() + 0.05 * torch.randn(p.shape, generator=gen)).contiguous()
    return out


def stream_loss(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor(ids)[None]).logits[0].to(torch.float64)
    logp = torch.log_softmax(logits[:-1], dim=-1)
    nll = -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return float(nll.mean()), len(ids) - 1


def main():
    torch.set_num_threads(1)
    ids = np.fromfile(STREAM, dtype=np.uint16).astype(np.int64).tolist()
    reference = {"stream": "tests/data/eval/stream.bin", "seq_len": len(ids), "cases": {}}
    for case in CASES:
        base_dir, adapter_dir = GOLDEN / case / "model", GOLDEN / case / "lora" / "adapter"
        keys = json.loads((GOLDEN / case / "lora" / "case.json").read_text())["trainable_params"].split(",")
        out = OUT / case
        out.mkdir(parents=True, exist_ok=True)
        gen = torch.Generator().manual_seed(SEED)
        model = load(base_dir)
        trainable = trainable_params(model, keys, gen)
        save_file(trainable, out / "trainable_params.safetensors", metadata={"format": "pt"})
        # LongLoRA's merge script, in float32 on the CPU.
        model.load_state_dict(trainable, strict=False)
        peft_model = PeftModel.from_pretrained(model, adapter_dir)
        loss, scored = stream_loss(peft_model, ids)
        merged = peft_model.merge_and_unload()
        state = {n: t.detach().clone().contiguous() for n, t in merged.state_dict().items()}
        if merged.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, out / "merged.safetensors", metadata={"format": "pt"})
        merged_loss, _ = stream_loss(merged, ids)
        reference["cases"][case] = {"peft_loss": loss, "merged_loss": merged_loss, "scored_tokens": scored,
                                    "trainable": sorted(trainable)}
        print(f"{case}: peft loss {loss:.9f}, merged {merged_loss:.9f}, {len(state)} tensors")
    (OUT / "reference.json").write_text(json.dumps(reference, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
