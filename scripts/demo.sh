#!/usr/bin/env bash
# `make demo`: the main job on an embedded default. Trains a tiny Mistral-architecture model (sliding window
# included, created in process) on synthetic long documents with passkeys buried in filler, at 4096 tokens per
# sequence with mini-sequence and checkpointing on; then inspects the checkpoint it wrote and runs LongLoRA's passkey
# test and a greedy generation on it (docs/eval.md; the tiny model does not retrieve keys, the commands are the point).
set -euo pipefail
build=${1:-build}
out=${DEMO_DIR:-demo-out}
bin="$build/miniseq"
rm -rf "$out"
"$bin" train --preset demo --output_dir "$out/train"
"$bin" inspect "$out/train"
"$bin" passkey --model "$out/train" --max_tokens 4097 --interval 1024 --trials 5 --progress False
"$bin" generate --model "$out/train" --max_new_tokens 24 \
  --prompt "The grass is green. The sky is blue. The pass key is 31415. Remember it. 31415 is the pass key."
