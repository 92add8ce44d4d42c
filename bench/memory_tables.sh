#!/usr/bin/env bash
# Prints the planner's longest trainable context per policy for the reference 7B/8B configs (bench/configs) on
# 80 GiB and 141 GiB devices, as a Markdown table (docs/memory.md). Pure planning: runs in seconds, no GPU needed.
#   bash bench/memory_tables.sh [build/miniseq]
set -euo pipefail
bin=${1:-build/miniseq}
cd "$(dirname "$0")/.."
echo "| model | device memory | ckpt + MsT | ckpt only | MsT only | neither |"
echo "|---|---:|---:|---:|---:|---:|"
for model in mistral-7b llama-2-7b llama-3-8b; do
  for mem in 80GiB 141GiB; do
    json=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --memory "$mem" --find_max_length --json)
    python3 - "$model" "$mem" "$json" <<'PY'
import json, sys
model, mem, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
m = j["max_length"]
f = lambda k: f"{m[k]:,}" if m[k] else "does not fit"
print(f"| {model} | {mem} | {f('checkpointing + MsT')} | {f('checkpointing only')} | {f('MsT only')} | {f('neither')} |")
PY
  done
done
