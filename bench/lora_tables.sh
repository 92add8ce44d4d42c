#!/usr/bin/env bash
# Prints the planner's longest LoRA+ context (LongLoRA's --low_rank_training True --trainable_params embed,norm:
# r 8, alpha 16, q/k/v/o) for Mistral-7B and Llama-3.1-8B (bench/configs) on 24, 48, 80 and 141 GiB devices with
# 128 GiB of host memory, per memory policy, as Markdown tables (docs/memory.md, "LoRA"); then issue 16's targets
# in decimal GB. Pure planning: runs in a minute or two, no GPU needed.
#   bash bench/lora_tables.sh [build/miniseq]
set -euo pipefail
bin=${1:-build/miniseq}
cd "$(dirname "$0")/.."
lora=(--low_rank_training True --trainable_params embed,norm)
plan() {  # $1 model, $2 device memory, $3 host memory
  "$bin" memplan --model "bench/configs/$1.json" --device cuda --memory "$2" --host_memory "$3" \
    --find_max_length --json "${lora[@]}"
}
echo "| model | device memory | ckpt + MsT | ckpt only | MsT only | neither | bf16 moments + in backward | optimizer on host + in backward | + checkpoints on host (128 GiB) | checkpoints on host, optimizer on device |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for model in mistral-7b llama-3.1-8b; do
  for mem in 24GiB 48GiB 80GiB 141GiB; do
    python3 - "$model" "$mem" "$(plan "$model" "$mem" 128GiB)" <<'PY'
import json, sys
model, mem, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
m, p = j["max_length"], j["max_length_by_memory_policy"]
f = lambda v: f"{v:,}" if v else "does not fit"
cols = [m["checkpointing + MsT"], m["checkpointing only"], m["MsT only"], m["neither"],
        p["bf16 moments + optimizer in backward"], p["optimizer on host (fp32 moments) + in backward"],
        p["optimizer and checkpoints on host"],
        p["checkpoints on host, optimizer (bf16 moments) on the device + in backward"]]
print(f"| {model} | {mem} | " + " | ".join(f(v) for v in cols) + " |")
PY
  done
done

# Issue 16's targets for Mistral-7B LoRA+, in the units it states them (decimal GB, 128 GB of host memory); Llama-3.1-8B
# against the same lengths for comparison.
echo
echo "| model | device memory | host memory | target | longest, device only | longest, checkpoints on host | met |"
echo "|---|---:|---:|---:|---:|---:|---|"
for model in mistral-7b llama-3.1-8b; do
  for spec in 24GB:65536 80GB:500000 141GB:800000; do
    mem=${spec%%:*} target=${spec##*:}
    python3 - "$model" "$mem" "$target" "$(plan "$model" "$mem" 128GB)" <<'PY'
import json, sys
model, mem, target, j = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
dev = j["max_length"]["checkpointing + MsT"]
host = max(v or 0 for k, v in j["max_length_by_memory_policy"].items() if "checkpoints on host" in k)
best = max(dev or 0, host or 0)
f = lambda v: f"{v:,}" if v else "does not fit"
print(f"| {model} | {mem} | 128GB | {target:,} | {f(dev)} | {f(host)} | {'yes' if best >= target else 'no'} |")
PY
  done
done
