#!/usr/bin/env bash
# `make demo`: the main job on an embedded default. Trains a tiny Mistral-architecture model (sliding window
# included, created in process) on synthetic long documents with passkeys buried in filler, at 4096 tokens per
# sequence with mini-sequence and checkpointing on; then inspects the checkpoint it wrote.
set -euo pipefail
build=${1:-build}
out=${DEMO_DIR:-demo-out}
bin="$build/miniseq"
rm -rf "$out"
"$bin" train --preset demo --output_dir "$out/train"
"$bin" inspect "$out/train"
