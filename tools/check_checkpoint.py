#!/usr/bin/env python3
"""A miniseq checkpoint read back by Hugging Face transformers gives the loss miniseq reported.

Trains a tiny golden model for a few steps with `miniseq train` on one block of data (so every step sees the same
sequence), saving a checkpoint at step N. The loss miniseq logs at step N+1 was computed with the checkpoint-N
weights; transformers loads checkpoint-N (and the final model) and computes the loss of the same block. Also loads
the final bf16 save. Run from the repository root:

    tools/.venv/bin/python tools/check_checkpoint.py [--miniseq build/miniseq]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = ["llama_basic", "mistral_window", "qwen2_bias_tied", "llama31_rope_llama3", "qwen2_rope_yarn", "qwen3_tied", "qwen3_yarn_bias"]


def hf_loss(model_dir, ids, labels):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    return float(out.loss)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--miniseq", default=str(ROOT / "build" / "miniseq"))
    args = ap.parse_args()
    worst = 0.0
    for case in CASES:
        golden = ROOT / "tests" / "data" / "golden" / case
        line = json.loads((golden / "batch.jsonl").read_text().splitlines()[0])
        ids = line["input_ids"]
        labels = line.get("labels", ids)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            (tmp / "data.jsonl").write_text(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
            for bf16 in ("False", "True"):
                out = tmp / f"out-{bf16}"
                cmd = [args.miniseq, "train", "--low_rank_training", "False", "--model_name_or_path", str(golden / "model"), "--data_path",
                       str(tmp / "data.jsonl"), "--output_dir", str(out), "--model_max_length", str(len(ids)),
                       "--per_device_train_batch_size", "1", "--max_steps", "4", "--save_steps", "3",
                       "--logging_steps", "1", "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
                       "--bf16", bf16]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
                reported = metrics[3]["loss"]  # step 4, computed with the weights of checkpoint-3
                if bf16 == "False":
                    ref = hf_loss(out / "checkpoint-3", ids, labels)
                    rel = abs(reported - ref) / abs(ref)
                    worst = max(worst, rel)
                    print(f"{case}: miniseq step-4 loss {reported:.8f}, transformers on checkpoint-3 {ref:.8f}, "
                          f"rel {rel:.2e}")
                # The final model (fp32 or bf16 files) loads and gives a finite loss close to the last one.
                final = hf_loss(out, ids, labels)
                print(f"{case}: final model (bf16={bf16}) loads in transformers, loss {final:.6f}")
    print(f"worst relative difference {worst:.2e}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
