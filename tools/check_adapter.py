#!/usr/bin/env python3
"""Loads a PEFT adapter directory written by miniseq into its base model the way LongLoRA's tools do, and prints
the loss of a batch: the check that peft reads what miniseq writes.

    tools/.venv/bin/python tools/check_adapter.py --base_model MODEL_DIR --peft_model ADAPTER_DIR \
        --data batch.jsonl [--expect LOSS] [--rtol 1e-6]

ADAPTER_DIR holds adapter_config.json + adapter_model.safetensors (PeftModel.from_pretrained) and, for LoRA+, the
fully trained tensors in trainable_params.safetensors under Hugging Face names, loaded into the base model first
as LongLoRA's merge_lora_weights_and_save_hf_model.py loads trainable_params.bin:
`model.load_state_dict(state, strict=False)`. The batch is miniseq grad's JSONL ({"input_ids", "labels"}); the loss
is transformers' (fp32, eager attention). With --expect, exits 1 unless |loss - expect| <= rtol·|expect|.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base_model", required=True)
    ap.add_argument("--peft_model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--expect", type=float)
    ap.add_argument("--rtol", type=float, default=1e-6)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(args.base_model, dtype=torch.float32, attn_implementation="eager")
    trainable = Path(args.peft_model) / "trainable_params.safetensors"
    if trainable.exists():
        state = load_file(str(trainable))
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        print(f"loaded {len(state)} tensors from {trainable}")
    model = PeftModel.from_pretrained(model, args.peft_model)
    model.eval()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    ids = torch.tensor([r["input_ids"] for r in rows])
    labels = torch.tensor([r.get("labels", r["input_ids"]) for r in rows])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss.item()
    print(f"loss {loss:.9g}")
    if args.expect is not None:
        rel = abs(loss - args.expect) / abs(args.expect)
        print(f"expected {args.expect:.9g}: relative difference {rel:.2e} (tolerance {args.rtol:g})")
        if rel > args.rtol:
            sys.exit(1)


if __name__ == "__main__":
    main()
