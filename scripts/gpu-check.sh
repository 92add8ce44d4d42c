#!/usr/bin/env bash
# The one GPU verification of the CUDA backend (issue 6), for a machine with an NVIDIA GPU (sized for one H200,
# 16 cores: about 5 minutes, of which the build is about 3). Writes into OUTDIR (at most 8 files):
#   report.md        readable summary: device, each check's verdict, the error figures, the benchmark table
#   gpu-check.json   the same as data (checks, per-op errors, golden errors, benchmark runs)
#   build.log, ops.log, golden.log, bench.log, cli.log   full outputs
# Checks: (1) every CUDA op vs the CPU backend (tests/test_ops_cuda.cpp), (2) the tiny golden models end to end vs
# the fp32 goldens and (3) bitwise-identical repeated runs (tests/test_grad_golden_cuda.cpp), (4) the
# Mistral-7B-shaped step benchmark at S = 4K, 16K, 32K (bench/bench_step_cuda.cpp; repeatability again at scale).
# Exit status 0 only when every check passed.
#
#   bash scripts/gpu-check.sh OUTDIR                 (from the repository root)
# If the machine's image lacks the build dependencies (OpenBLAS, GTest, nlohmann-json, PCRE2, pkg-config), carry
# the .deb files fetched by scripts/gpu-deps.sh in .gpudeps/: they are unpacked into a private prefix.
set -uo pipefail
OUT=${1:?usage: bash scripts/gpu-check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu-check}
JOBS=${JOBS:-$(nproc)}
LAYERS=${LAYERS:-4}
T0=$(date +%s)
log() { echo "[gpu-check $(($(date +%s) - T0))s] $*" | tee -a "$OUT/build.log"; }
: > "$OUT/build.log"

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
export PATH=/usr/local/cuda/bin:$PATH

# ---- dependencies: use the system's, else unpack the carried .debs into a private prefix ----
CMAKE_EXTRA=()
missing=()
[ -e /usr/include/gtest/gtest.h ] || missing+=(gtest)
[ -e /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json)
command -v pkg-config > /dev/null && pkg-config --exists libpcre2-8 || missing+=(pcre2/pkg-config)
ls /usr/lib/x86_64-linux-gnu/libopenblas* /usr/lib/x86_64-linux-gnu/openblas*/libopenblas* > /dev/null 2>&1 ||
  missing+=(openblas)
if [ ${#missing[@]} -gt 0 ]; then
  log "missing on this image: ${missing[*]}"
  if ls .gpudeps/*.deb > /dev/null 2>&1; then
    P=/opt/miniseq-deps
    mkdir -p $P
    for f in .gpudeps/*.deb; do dpkg -x "$f" $P; done
    A=$P/usr/lib/x86_64-linux-gnu
    export PATH=$P/usr/bin:$PATH
    export PKG_CONFIG_PATH=$A/pkgconfig:$P/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$P
    export PKG_CONFIG_LIBDIR=$A/pkgconfig:$P/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$A:$A/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    CMAKE_EXTRA=(-DCMAKE_PREFIX_PATH="$P/usr;$A/cmake" -DOPENBLAS_LIB=$A/openblas-openmp/libopenblas.so
      -DCBLAS_INCLUDE_DIR=$P/usr/include/x86_64-linux-gnu/openblas-openmp -DGTEST_ROOT=$P/usr
      -DPKG_CONFIG_EXECUTABLE=$P/usr/bin/pkgconf)
    log "unpacked $(ls .gpudeps/*.deb | wc -l) carried packages into $P"
  else
    log "and no .gpudeps/ to unpack (run scripts/gpu-deps.sh where apt works and carry .gpudeps); trying anyway"
  fi
fi

# ---- build: sm_90 only, the targets of the checks ----
GEN=()
# Ninja when available, unless the build folder was configured with another generator.
if command -v ninja > /dev/null && { [ ! -f "$BUILD/CMakeCache.txt" ] || grep -q 'CMAKE_GENERATOR:INTERNAL=Ninja' "$BUILD/CMakeCache.txt"; }; then
  GEN=(-G Ninja)
fi
log "configure + build ($JOBS jobs)"
if ! { cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DMINISEQ_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_EXTRA[@]}" &&
       cmake --build "$BUILD" -j "$JOBS" --target miniseq test_ops_cuda test_grad_golden_cuda bench_step_cuda; } \
     >> "$OUT/build.log" 2>&1; then
  log "BUILD FAILED (see build.log)"
  printf '# gpu-check: build failed\n\nSee build.log.\n' > "$OUT/report.md"
  printf '{"build": false}\n' > "$OUT/gpu-check.json"
  exit 1
fi
log "build done"

# ---- (1) ops, (2)+(3) goldens and repeatability, (4) benchmark ----
log "(1) CUDA ops vs CPU backend"
timeout 300 "$BUILD/test_ops_cuda" --gtest_output=json:"$BUILD/ops.json" > "$OUT/ops.log" 2>&1
ops_rc=$?
log "(1) exit $ops_rc"
log "(2)+(3) golden models on CUDA, repeatability"
timeout 300 "$BUILD/test_grad_golden_cuda" --gtest_output=json:"$BUILD/golden.json" > "$OUT/golden.log" 2>&1
golden_rc=$?
log "(2)+(3) exit $golden_rc"
log "(4) Mistral-7B-shaped step, $LAYERS layers"
timeout 300 "$BUILD/bench_step_cuda" --layers "$LAYERS" --json "$BUILD/bench.json" > "$OUT/bench.log" 2>&1
bench_rc=$?
log "(4) exit $bench_rc"
log "(5) the command line on CUDA: miniseq grad, train (+ resume), eval, generate"
G=tests/data/golden/llama_basic
{ timeout 120 "$BUILD/miniseq" grad --device cuda --model "$G/model" --data "$G/batch.jsonl" --out "$BUILD/grads_cuda.safetensors" &&
  timeout 180 "$BUILD/miniseq" train --preset demo --device cuda --max_steps 4 --model_max_length 1024 \
    --logging_steps 1 --save_steps 2 --output_dir "$BUILD/demo_cuda" &&
  timeout 180 "$BUILD/miniseq" train --preset demo --device cuda --max_steps 6 --model_max_length 1024 \
    --logging_steps 1 --save_steps 2 --output_dir "$BUILD/demo_cuda" --resume_from_checkpoint True &&
  echo "eval on CUDA (CPU/transformers reference: perplexity 134.975835, tests/data/eval/reference.json)" &&
  timeout 60 "$BUILD/miniseq" eval --device cuda --model "$G/model" --data tests/data/eval/stream.bin \
    --seq_len 48 --stride 20 --batch 3 --json --progress False &&
  echo "generate on CUDA with and without the KV cache (transformers: 81 8 51 115 5 101 10 103 120 5 ...)" &&
  timeout 60 "$BUILD/miniseq" generate --device cuda --model tests/data/golden/mistral_window/model \
    --prompt_ids '[5,6,7,8,9]' --max_new_tokens 40 --stop_at_eos False --use_cache True &&
  timeout 60 "$BUILD/miniseq" generate --device cuda --model tests/data/golden/mistral_window/model \
    --prompt_ids '[5,6,7,8,9]' --max_new_tokens 40 --stop_at_eos False --use_cache False; } > "$OUT/cli.log" 2>&1
cli_rc=$?
log "(5) exit $cli_rc"
log "total $(($(date +%s) - T0)) s"

# ---- report ----
python3 - "$OUT" "$BUILD" "$ops_rc" "$golden_rc" "$bench_rc" "$cli_rc" "$(($(date +%s) - T0))" << 'PY'
import json, os, re, sys
out, build, ops_rc, golden_rc, bench_rc, cli_rc, secs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
def text(p):
    try:
        return open(p).read()
    except Exception:
        return ""
def failures(g):
    res = []
    for suite in (g or {}).get("testsuites", []):
        for t in suite.get("testsuite", []):
            if t.get("failures"):
                res.append(suite["name"] + "." + t["name"])
    return res
ops, golden, bench = load(f"{build}/ops.json"), load(f"{build}/golden.json"), load(f"{build}/bench.json")
ops_log, golden_log, bench_log = text(f"{out}/ops.log"), text(f"{out}/golden.log"), text(f"{out}/bench.log")
errs = [l[6:].strip() for l in ops_log.splitlines() if l.startswith("[err]")]
gold = [l[9:].strip() for l in golden_log.splitlines() if l.startswith("[golden]")]
repeat_ok = golden_rc == 0 and "differs between identical runs" not in golden_log
bench_repeat = bench is not None and all(r["bitwise_repeatable"] for r in bench["runs"])
summary = {
    "seconds": secs,
    "checks": {
        "ops_vs_cpu": ops_rc == 0, "golden_models": golden_rc == 0,
        "repeatable_tiny": repeat_ok, "repeatable_mistral_shaped": bench_repeat, "benchmark_ran": bench_rc == 0,
        "cli_grad_and_train": cli_rc == 0},
    "failed_tests": failures(ops) + failures(golden),
    "op_errors": errs, "golden_errors": gold, "benchmark": bench,
}
json.dump(summary, open(f"{out}/gpu-check.json", "w"), indent=2)
ok = lambda b: "PASS" if b else "FAIL"
dev = re.search(r"device: (.*)", ops_log + bench_log)
r = [f"# CUDA backend GPU check (scripts/gpu-check.sh)\n",
     f"Device: {dev.group(1) if dev else 'unknown'}; total time {secs} s.\n",
     "| check | result |", "|---|---|",
     f"| (1) every op vs the CPU backend, bf16 tolerances | {ok(ops_rc == 0)} |",
     f"| (2) tiny golden models end to end vs fp32 goldens | {ok(golden_rc == 0)} |",
     f"| (3) bitwise-identical repeated runs (tiny models; Mistral-shaped losses) | {ok(repeat_ok)} / {ok(bench_repeat)} |",
     f"| (4) Mistral-7B-shaped benchmark ran | {ok(bench_rc == 0)} |",
     f"| (5) `miniseq grad --device cuda`, `miniseq train --device cuda` + resume (cli.log) | {ok(cli_rc == 0)} |", ""]
if summary["failed_tests"]:
    r += ["Failed tests: " + ", ".join(summary["failed_tests"]), ""]
if bench:
    r += [f"## Benchmark: {bench['layers']} Mistral-7B-shaped layers, MsT + checkpointing, batch 1\n",
          f"cuBLASLt bf16 GEMM rate: {bench['gemm_tflops']:.0f} TFLOP/s.\n",
          "| S | step s | tokens/s | model TFLOP/s | MFU (989) | MFU (GEMM) | planned GiB | measured GiB | measured/planned | repeatable |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for x in bench["runs"]:
        r.append(f"| {x['S']} | {x['step_seconds']:.3f} | {x['tokens_per_second']:.0f} | {x['model_tflops']:.0f} | "
                 f"{100*x['mfu_vs_989']:.1f}% | {100*x['mfu_vs_gemm']:.1f}% | {x['planned_arena_bytes']/2**30:.2f} | "
                 f"{x['measured_device_bytes']/2**30:.2f} | {x['measured_over_planned']:.3f} | {x['bitwise_repeatable']} |")
    r.append("")
r += ["## Op errors (CUDA vs CPU, observed vs tolerance)\n", "```"] + errs + ["```", "",
      "## Golden models (loss and worst gradient per case and policy)\n", "```"] + gold + ["```", ""]
open(f"{out}/report.md", "w").write("\n".join(r) + "\n")
print("\n".join(r))
PY
[ $ops_rc -eq 0 ] && [ $golden_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $cli_rc -eq 0 ]
