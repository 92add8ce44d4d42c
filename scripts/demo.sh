#!/usr/bin/env bash
# `make demo`: the main job on an embedded default. Until the trainer lands this writes a tiny Mistral-style model
# directory with miniseq itself (sharded safetensors + config.json) and inspects it.
set -euo pipefail
build=${1:-build}
out=${DEMO_DIR:-demo-out}
bin="$build/miniseq"
rm -rf "$out"
"$bin" tiny-model --out "$out/tiny-mistral" --arch mistral --sliding_window 16 --num_hidden_layers 4 \
  --hidden_size 128 --intermediate_size 352 --num_attention_heads 8 --num_key_value_heads 2 --vocab_size 1000 \
  --max_shard_bytes 200000
"$bin" inspect "$out/tiny-mistral"
