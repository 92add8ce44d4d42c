#!/usr/bin/env bash
# GPU check of the host-offload memory policies (issue 7), run after scripts/gpu-check.sh (it reuses that build).
# A full-size random Mistral-7B (bf16 weights, written by `miniseq tiny-model`) trains a few steps at S tokens:
#   (a) AdamW in the backward pass on the device (bf16 moments),
#   (b) the same with the optimizer state and fp32 master weights on the host (CPU AdamW beside the backward),
#   (c) (b) + every checkpointed layer input on the host,
# reporting tokens/s, (b)/(a) and (c)/(a) (target: >= 85% at 32K), the planned device/host memory, the measured
# device peak (nvidia-smi, sampled) and the peak RSS. RUN_MAX=1 adds one step at the planner's longest length for
# this device with everything offloaded (slow: minutes per step at 500K tokens).
#
#   bash scripts/gpu-offload-check.sh OUTDIR [S=32768] [STEPS=3]
set -uo pipefail
OUT=${1:?usage: bash scripts/gpu-offload-check.sh OUTDIR [S] [STEPS]}
S=${2:-32768}
STEPS=${3:-3}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu-check}
BIN=$BUILD/miniseq
[ -x "$BIN" ] || { echo "run scripts/gpu-check.sh first (no $BIN)"; exit 1; }
M=$BUILD/mistral-7b-random
log() { echo "[offload-check] $*" | tee -a "$OUT/offload.log"; }
: > "$OUT/offload.log"

if [ ! -f "$M/config.json" ]; then
  log "writing a random Mistral-7B (bf16, ~14.5 GB) to $M"
  "$BIN" tiny-model --out "$M" --arch mistral --hidden_size 4096 --intermediate_size 14336 --num_hidden_layers 32 \
    --num_attention_heads 32 --num_key_value_heads 8 --vocab_size 32000 --max_position_embeddings 1048576 \
    --sliding_window 0 --dtype bfloat16 --max_shard_bytes 5000000000 >> "$OUT/offload.log" 2>&1 || exit 1
fi
python3 -c "
import json, random
random.seed(0)
with open('$BUILD/offload-data.jsonl', 'w') as f:
    for _ in range($STEPS + 1):
        f.write(json.dumps({'input_ids': [random.randrange(3, 32000) for _ in range($S)]}) + '\n')
"

run() {  # $1 name, $2 S, $3 steps, rest: policy flags
  local name=$1 s=$2 steps=$3
  shift 3
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/$name.smi" 2>/dev/null &
  local smi=$!
  timeout 1200 "$BIN" train --model_name_or_path "$M" --data_path "${DATA:-$BUILD/offload-data.jsonl}" --device cuda \
    --output_dir "$BUILD/offload-$name" --model_max_length "$s" --max_steps "$steps" --logging_steps 1 \
    --save_strategy no --learning_rate 1e-5 --max_grad_norm 0 --optimizer_in_backward True "$@" \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  kill $smi 2> /dev/null
  local peak
  peak=$(sort -n "$OUT/$name.smi" 2>/dev/null | tail -1)
  local tps
  tps=$(grep -o 'tokens/s [0-9.]*' "$OUT/$name.log" | tail -1 | awk '{print $2}')
  log "$name: exit $rc, S=$s, tokens/s ${tps:-?}, device peak (nvidia-smi) ${peak:-?} MiB; $(grep -E 'planned peak|host memory' "$OUT/$name.log" | tr '\n' ' ')"
  echo "${tps:-0}"
}

a=$(run device "$S" "$STEPS" --moments_dtype bfloat16 | tail -1)
b=$(run host_optimizer "$S" "$STEPS" --offload_optimizer True | tail -1)
c=$(run host_all "$S" "$STEPS" --offload_optimizer True --offload_checkpoints -1 | tail -1)
python3 -c "
a, b, c = float('$a' or 0), float('$b' or 0), float('$c' or 0)
print(f'[offload-check] S=$S: host optimizer {b / a:.1%} of on-device, host optimizer + checkpoints {c / a:.1%}' if a else 'no baseline')
" | tee -a "$OUT/offload.log"

if [ "${RUN_MAX:-0}" = 1 ]; then
  mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  max=$("$BIN" memplan --model "$M" --device cuda --memory "${mem}MiB" --host_memory 128GiB --find_max_length --json |
    python3 -c "import json,sys; print(json.load(sys.stdin)['max_length_by_memory_policy']['optimizer and checkpoints on host'])")
  log "planner's longest length for ${mem} MiB with everything offloaded: $max"
  python3 -c "
import json, random
random.seed(1)
with open('$BUILD/offload-max.jsonl', 'w') as f:
    f.write(json.dumps({'input_ids': [random.randrange(3, 32000) for _ in range($max)]}) + '\n')
"
  DATA=$BUILD/offload-max.jsonl run max "$max" 1 --offload_optimizer True --offload_checkpoints -1 > /dev/null
fi
