#!/usr/bin/env bash
# The host-offload throughput check at Mistral-7B scale (issue 7), now a step of scripts/gpu-check.sh run in its own
# lease (a device machine is bare after each call, so it builds again): deps, build (miniseq only), offload_perf.
# Same budget (540 s), report (report.md, gpu-check.json after every step) and dry run as gpu-check.sh.
#
#   bash scripts/gpu-offload-check.sh OUTDIR [S=32768] [STEPS=3]
# The old RUN_MAX=1 (one step at the planner's longest length) does not fit one command's 600 s: run it by hand
# (docs/memory.md).
set -euo pipefail
export GPU_CHECK_STEPS="deps build offload_perf"
export GPU_CHECK_OFFLOAD_S=${2:-32768} GPU_CHECK_OFFLOAD_STEPS=${3:-3}
exec bash "$(dirname "$0")/gpu-check.sh" "${1:?usage: bash scripts/gpu-offload-check.sh OUTDIR [S] [STEPS]}"
