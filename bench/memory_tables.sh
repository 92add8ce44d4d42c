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

# The memory policies beyond MsT (issue 7), each with MsT + checkpointing, with 128 GiB of host memory for what is
# offloaded: one column per rung of the planner's policy ladder (model/planner.h policy_ladder).
echo
echo "| model | device memory | fp32 moments | bf16 moments | + optimizer in backward | optimizer on host | + checkpoints on host | + bf16 moments on host |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for model in mistral-7b llama-2-7b llama-3-8b; do
  for mem in 80GiB 141GiB; do
    json=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --memory "$mem" --host_memory 128GiB \
      --find_max_length --json)
    python3 - "$model" "$mem" "$json" <<'PY'
import json, sys
model, mem, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
m = list(j["max_length_by_memory_policy"].items())
order = ["fp32 moments", "bf16 moments", "bf16 moments + optimizer in backward",
         "optimizer on host (fp32 moments) + in backward", "optimizer and checkpoints on host",
         "optimizer (bf16 moments) and checkpoints on host"]
d = dict(m)
f = lambda k: f"{d[k]:,}" if d[k] else "does not fit"
print(f"| {model} | {mem} | " + " | ".join(f(k) for k in order) + " |")
PY
  done
done
