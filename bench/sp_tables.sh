#!/usr/bin/env bash
# The planner's longest context per rank layout on one node of 8 GPUs (docs/memory.md, "Eight GPUs"): Mistral-7B and
# Llama-3.1-8B (bench/configs), full fine-tuning and LoRA+, on 8 x 80 GB and 8 x 141 GB with 1 TB of host memory
# per node (125 GB per rank), for D x P = 1 x 8, 2 x 4, 4 x 2 and 8 x 1 (Ulysses sequence parallelism P, data
# parallelism D) with ZeRO-2 and bf16 moments. MODELS="mistral-7b" limits the models. Pure planning (one rank's
# plan), no GPU needed: about a minute a row on a loaded 2-core machine.
#   bash bench/sp_tables.sh [build/miniseq]
set -euo pipefail
bin=${1:-build/miniseq}
cd "$(dirname "$0")/.."
echo "| model | training | GPU memory | D x P | ZeRO | checkpoints on the device | + on the host (125 GB per rank) |"
echo "|---|---|---:|---:|---:|---:|---:|"
for model in ${MODELS:-mistral-7b llama-3.1-8b}; do
  for kind in full lora; do
    extra=""
    [ "$kind" = lora ] && extra="--low_rank_training True --trainable_params embed,norm"
    for mem in 80GB 141GB; do
      for dpz in "1 8 2" "2 4 2" "4 2 2" "8 1 2"; do
        read -r D P zero <<< "$dpz"
        row=()
        for off in 0 -1; do
          # shellcheck disable=SC2086
          json=$("$bin" memplan --model "bench/configs/$model.json" --device cuda --memory "$mem" \
            --host_memory 125GB --data_parallel "$D" --sequence_parallel "$P" --zero_stage "$zero" \
            --moments_dtype bfloat16 --offload_checkpoints "$off" --find_max_length --policy_ladder False --json $extra)
          row+=("$(python3 -c 'import json,sys; m=json.loads(sys.argv[1])["max_length"]["checkpointing + MsT"]; print(f"{m:,}" if m else "does not fit")' "$json")")
        done
        label=$([ "$kind" = lora ] && echo "LoRA+ (r 8, embed, norm)" || echo "full")
        echo "| $model | $label | $mem | $D x $P | $zero | ${row[0]} | ${row[1]} |"
      done
    done
  done
done
