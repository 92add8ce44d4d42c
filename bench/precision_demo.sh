#!/usr/bin/env bash
# The precision policy's cost in accuracy on the demo (docs/memory.md): `miniseq train --preset demo` (tiny Mistral,
# synthetic passkey documents, 60 steps at 4096 tokens on the CPU) with fp32 weights and gradients, and with
# --master_weights False --grad_dtype bfloat16 (bf16 weights with stochastic rounding, bf16 gradients; the CPU
# emulates bf16 storage exactly). Prints the logged loss of both runs side by side as a Markdown table, then the mean
# relative difference. Extra flags go to both runs (e.g. --max_steps 20 --model_max_length 1024 for a quick look).
# Full attention (--use_full_attn True), as the table in docs/memory.md was measured; give --use_full_attn False
# for the demo's S²-Attn default.
#   bash bench/precision_demo.sh [build/miniseq] [flags...]
set -euo pipefail
bin=${1:-build/miniseq}
shift || true
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin" train --preset demo --output_dir "$out/fp32" --save_strategy no --use_full_attn True "$@" > /dev/null
"$bin" train --preset demo --output_dir "$out/policy" --save_strategy no --use_full_attn True --master_weights False \
  --grad_dtype bfloat16 "$@" > /dev/null
python3 - "$out/fp32/metrics.jsonl" "$out/policy/metrics.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
print("| step | loss, fp32 weights and gradients | loss, bf16 weights (stochastic rounding) + bf16 gradients | difference |")
print("|---:|---:|---:|---:|")
rel = []
for x, y in zip(a, b):
    d = (y["loss"] - x["loss"]) / x["loss"]
    rel.append(abs(d))
    print(f"| {x['step']} | {x['loss']:.4f} | {y['loss']:.4f} | {100 * d:+.2f}% |")
print()
print(f"mean |relative difference| {100 * sum(rel) / len(rel):.2f}%, largest {100 * max(rel):.2f}%, "
      f"last {100 * rel[-1]:.2f}%")
PY
