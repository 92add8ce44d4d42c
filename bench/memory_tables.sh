#!/usr/bin/env bash
# Prints the planner's longest trainable context per policy for the reference 7B/8B configs (bench/configs) on
# 80 GiB and 141 GiB devices, as a Markdown table (docs/memory.md). Pure planning: runs in seconds, no GPU needed.
#   bash bench/memory_tables.sh [build/miniseq]
set -euo pipefail
bin=${1:-build/miniseq}
cd "$(dirname "$0")/.."
table() {  # $1: extra memplan flags, $2: label of the optimizer policy
  for model in mistral-7b llama-2-7b llama-3-8b; do
    for mem in 80GiB 141GiB; do
      json=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --memory "$mem" --find_max_length \
        --json $1)
      python3 - "$model" "$mem" "$2" "$json" <<'PY'
import json, sys
model, mem, label, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
m = j["max_length"]
f = lambda k: f"{m[k]:,}" if m[k] else "does not fit"
print(f"| {model} | {mem} | {label} | {f('checkpointing + MsT')} | {f('checkpointing only')} | {f('MsT only')} | {f('neither')} |")
PY
    done
  done
}
echo "| model | device memory | optimizer state | ckpt + MsT | ckpt only | MsT only | neither |"
echo "|---|---:|---|---:|---:|---:|---:|"
table "" "fp32 moments"
table "--moments_dtype bfloat16" "bf16 moments"
table "--moments_dtype bfloat16 --optimizer_in_backward True" "bf16 moments, optimizer in backward"
# The precision policy (issue 14, inexact): bf16 weights without fp32 master (stochastic rounding), bf16 gradients.
table "--moments_dtype bfloat16 --master_weights False" "bf16 moments, no master"
table "--moments_dtype bfloat16 --master_weights False --grad_dtype bfloat16" "bf16 moments and grads, no master"

# The memory policies beyond MsT (issue 7), each with MsT + checkpointing, with 128 GiB of host memory for what is
# offloaded: one column per rung of the planner's policy ladder (model/planner.h policy_ladder; the inexact
# precision rungs of issue 14 sit between the exact device-only ones and host offload).
echo
echo "| model | device memory | fp32 moments | bf16 moments | + optimizer in backward | no master + bf16 moments | + bf16 grads | + in backward | optimizer on host | + checkpoints on host | + bf16 moments on host |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for model in mistral-7b llama-2-7b llama-3-8b; do
  for mem in 80GiB 141GiB; do
    json=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --memory "$mem" --host_memory 128GiB \
      --find_max_length --json)
    python3 - "$model" "$mem" "$json" <<'PY'
import json, sys
model, mem, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
m = list(j["max_length_by_memory_policy"].items())
order = ["fp32 moments", "bf16 moments", "bf16 moments + optimizer in backward",
         "no master (stochastic rounding) + bf16 moments", "no master + bf16 grads and moments",
         "no master + bf16 grads and moments + in backward",
         "optimizer on host (fp32 moments) + in backward", "optimizer and checkpoints on host",
         "optimizer (bf16 moments) and checkpoints on host"]
d = dict(m)
f = lambda k: f"{d[k]:,}" if d[k] else "does not fit"
print(f"| {model} | {mem} | " + " | ".join(f(k) for k in order) + " |")
PY
  done
done

# Issue 14's target: 32K tokens with gradient accumulation 8 (no optimizer in backward) on a 94 GB device alone:
# the policy --auto picks, and the LongLoRA recipe's arithmetic (bf16 weights without master, bf16 gradients, bf16
# moments: 8 bytes per parameter).
echo
echo "| model | device memory | S | accumulation | --auto picks | its planned peak | bf16 weights (no master) + bf16 grads + bf16 moments |"
echo "|---|---:|---:|---:|---|---:|---:|"
for model in mistral-7b llama-2-7b llama-3-8b; do
  auto=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --memory 94GB --model_max_length 32768 \
    --gradient_accumulation_steps 8 --auto --json)
  seed=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --model_max_length 32768 \
    --gradient_accumulation_steps 8 --master_weights False --grad_dtype bfloat16 --moments_dtype bfloat16 --json)
  python3 - "$model" "$auto" "$seed" <<'PY'
import json, sys
model, a, s = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
gb = lambda b: f"{b / 1e9:.1f} GB"
pick = a["auto_policy"] if a["auto_fits"] else "nothing fits"
print(f"| {model} | 94 GB | 32,768 | 8 | {pick} | {gb(a['arena_bytes']) if a['auto_fits'] else '-'} | {gb(s['arena_bytes'])} |")
PY
done
