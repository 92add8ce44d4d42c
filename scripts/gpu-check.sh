#!/usr/bin/env bash
# The whole GPU verification of the CUDA backend in one command, sized for the device tool (one H200, 16 cores;
# a command may run 600 s; the steps are budgeted to end within GPU_CHECK_BUDGET = 540 s, the build included):
#
#   bash scripts/gpu-check.sh OUTDIR            (from the repository root; the device tool: "$OUT")
#
# Steps, in order (each with its own time budget, listed once below in BUDGET):
#   deps      the build dependencies, or the .deb files carried in .gpudeps/ (scripts/gpu-deps.sh); else stop
#   build     -DMINISEQ_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DMINISEQ_ONEDNN=OFF, -lineinfo for the sanitizer
#   ops       tests/test_ops_cuda.cpp: every CUDA op vs the CPU backend within its bf16 tolerance
#   golden    tests/test_grad_golden_cuda.cpp: the golden models (and the S²-Attn ones) end to end vs fp32 goldens;
#             repeatability
#   cli       `miniseq grad|eval|generate --device cuda` vs the golden loss and transformers' perplexity and ids
#             (tests/data/eval/reference.json; the bf16 rule for ids: scripts/gpu-check-bf16.json)
#   offload   `miniseq train --device cuda`, 8 steps: the asynchronous paths (host optimizer in backward, layer
#             inputs on the host, gradient accumulation; > 16 copies, so the copy-event ring wraps) and a resume,
#             each compared with its synchronous twin bit for bit; the same for LoRA+ (the adapter and trainable
#             params: host optimizer in backward with host checkpoints, and a resume)
#   nccl      not in the default list (GPU_CHECK_STEPS="deps build nccl"): mpirun -np 1 train through NCCL vs no
#             launcher, bit for bit; the deps step then also unpacks the Open MPI carried in .gpudeps/openmpi
#   sanitize  only after a failure: the failing test cases again with MINISEQ_CUDA_SYNC=1, then under
#             compute-sanitizer memcheck (racecheck for attention), and the first failing command under memcheck
#   bench     bench_step_cuda --layers 4 at S = 4K, 16K, 32K (32K only when little time is left)
# OUTDIR gets at most 8 files: report.md, gpu-check.json (both rewritten after every step and on exit),
# build.log, ops.log, golden.log, cli.log, sanitizer.log, bench.log; the last lines printed are a one-screen
# summary. Exit status 0 only when every step passed (a dry run: when nothing failed).
#
# Dry run (GPU_CHECK_DRY_RUN=1, automatic without a working nvidia-smi): everything but the CUDA calls. It builds
# (with the CUDA backend when nvcc is present), lists the CUDA tests instead of running them, runs the cli and
# offload steps on the CPU (fp32: the same comparisons with the CPU's tolerances, so the checks themselves are
# exercised), and marks the GPU steps skipped. GPU_CHECK_SELFTEST=1 (dry run) also runs test_ops_cuda, which fails
# without a GPU, to exercise the sanitize step. docs/cuda.md, "gpu-check", has the measured step times.
#
# Environment: BUILD (build-gpu-check), JOBS (nproc), GPU_CHECK_BUDGET (540), GPU_CHECK_DRY_RUN (auto),
# MINISEQ_TEST_DATA (tests/data of this tree; exported for the tests).
set -uo pipefail

# ---- the step budget (seconds): the one place. deps + build + ... + bench = GPU_CHECK_BUDGET -------------------
# The last step of the list gets whatever the earlier ones left. GPU_CHECK_STEPS="deps build offload_perf" selects
# another list (scripts/gpu-offload-check.sh: the host-offload throughput at Mistral-7B scale, its own lease).
read -r -a STEP_ORDER <<< "${GPU_CHECK_STEPS:-deps build ops golden cli offload sanitize bench}"
declare -A BUDGET=(
  [deps]=20       # dpkg -x of 15 carried packages: 3-6 s here (a VM's file system may be slower); + Open MPI: 1-2 s
  [build]=240     # 16 cores: ~60 s expected (docs/cuda.md); nothing else can run without it: a wide margin
  [ops]=35        # test_ops_cuda: CUDA context + ~10 op families with double-precision CPU references
  [golden]=35     # test_grad_golden_cuda: 15 tiny models x policies, 3 S²-Attn goldens x 3 policies
  [cli]=50        # 1 grad + 4 eval + 6 generate processes, ~1-2 s each (CUDA context, cuBLASLt); 4 s each fit
  [offload]=75    # 14 short training runs of the tiny Llama (~2 s each, 5 s fit)
  [sanitize]=60   # only after a failure; memcheck is 10-100x slower than a plain run
  [bench]=40      # plus whatever the earlier steps left unused (it runs last)
  [offload_perf]=280  # not in the default list: a random Mistral-7B (14.5 GB) and 3 runs of 3 steps at 32K
  [nccl]=70       # not in the default list (GPU_CHECK_STEPS="deps build nccl"): 6 demo runs of 3 steps and 2 grads, + 4 with 2 GPUs
)
TOTAL_BUDGET=${GPU_CHECK_BUDGET:-540}
# GPU_CHECK_BUDGET_<step>=S overrides one step (a dry run on a 2-core machine needs ~15 min for the build).
for s in "${STEP_ORDER[@]}"; do
  v=GPU_CHECK_BUDGET_$s
  [ -n "${!v:-}" ] && BUDGET[$s]=${!v}
done

OUT=${1:?usage: bash scripts/gpu-check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
BUILD=${BUILD:-build-gpu-check}
JOBS=${JOBS:-$(nproc)}
WORK=$ROOT/$BUILD/gpu-check-work   # scratch, never in OUTDIR (at most 8 files come back from there)
PYTHON=$(python3 -c 'import sys; print(sys.executable)' 2> /dev/null || echo python3)  # not a pyenv shim each time
PY=("$PYTHON" "$ROOT/scripts/gpu-check.py")
G=tests/data/golden
export MINISEQ_TEST_DATA=${MINISEQ_TEST_DATA:-$ROOT/tests/data}
export PATH=/usr/local/cuda/bin:$PATH
T0=$(date +%s)
DEADLINE=$((T0 + TOTAL_BUDGET))

now() { date +%s; }
log() { echo "[gpu-check $(($(now) - T0))s] $*" | tee -a "$OUT/build.log"; }

# ---- dry run? ----
DRY=${GPU_CHECK_DRY_RUN:-auto}
if [ "$DRY" = auto ]; then
  if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then DRY=0; else DRY=1; fi
fi
DEV=cuda
[ "$DRY" = 1 ] && DEV=cpu

rm -rf "$WORK" && mkdir -p "$WORK/steps" "$WORK/checks"
: > "$OUT/build.log"
for f in ops golden cli sanitizer bench; do : > "$OUT/$f.log"; done

# ---- step bookkeeping: every step writes WORK/steps/NAME.json, then the report is rewritten ----
STEP=""          # the step running now
STEP_STATUS=""   # pass, fail, timeout, skipped, not needed
STEP_SUMMARY=""
STEP_NOTES=()
STEP_T0=0
STEP_TIMEOUT=0
STEP_DEADLINE=0
FAILED_CMDS=()   # commands of the cli/offload steps that failed (the sanitize step reruns the first)
FAILED_TESTS=()  # "BINARY|FILTER" of the ops/golden steps

DEVICE_DESC="no GPU (dry run)"
[ "$DRY" = 1 ] || DEVICE_DESC=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2> /dev/null |
  head -1)
[ -n "$DEVICE_DESC" ] || DEVICE_DESC="unknown (nvidia-smi failed)"
COMMIT=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
NVCC_VERSION=$(nvcc --version 2> /dev/null | grep -o 'release [0-9.]*' || echo 'no nvcc')
meta() {
  "${PY[@]}" meta "$WORK/meta.json" "$DEVICE_DESC" "$COMMIT" "$TOTAL_BUDGET" "$(($(now) - T0))" "$DRY" \
    "${#STEP_ORDER[@]}" "$JOBS" "$NVCC_VERSION"
}

write_step() {  # [status]: the current step's record
  local order=0 i
  for i in "${!STEP_ORDER[@]}"; do [ "${STEP_ORDER[$i]}" = "$STEP" ] && order=$i; done
  "${PY[@]}" step "$WORK/steps/$STEP.json" "$STEP" "$order" "${1:-$STEP_STATUS}" "$(($(now) - STEP_T0))" \
    "${BUDGET[$STEP]}" "$STEP_TIMEOUT" "$STEP_SUMMARY" "${STEP_NOTES[@]}"
}

report() {
  meta
  "${PY[@]}" report "$WORK" "$OUT" > /dev/null
}

run_step() {  # NAME: runs step_NAME within its budget (bench: all that is left)
  STEP=$1 STEP_STATUS=pass STEP_SUMMARY="" STEP_NOTES=() STEP_T0=$(now) CHECKS_PASSED=0 CHECKS_FAILED=0
  CMDS_RUN=0 CMDS_FAILED=0 CMDS_SKIPPED=0 FIRST_ERROR=""
  local left=$((DEADLINE - STEP_T0))
  STEP_TIMEOUT=${BUDGET[$STEP]}
  if [ "$STEP" = "${STEP_ORDER[-1]}" ] || [ "$STEP_TIMEOUT" -gt "$left" ]; then STEP_TIMEOUT=$left; fi
  STEP_DEADLINE=$((STEP_T0 + STEP_TIMEOUT))
  log "($STEP) budget ${BUDGET[$STEP]} s, timeout $STEP_TIMEOUT s"
  write_step running
  report  # a step killed from outside (SIGKILL at the tool's 600 s) stays "running" in the report
  if [ "$STEP_TIMEOUT" -lt 3 ]; then
    STEP_STATUS=timeout STEP_SUMMARY="no time left in the ${TOTAL_BUDGET} s budget"
  else
    "step_$STEP"
  fi
  log "($STEP) $STEP_STATUS in $(($(now) - STEP_T0)) s${STEP_SUMMARY:+: $STEP_SUMMARY}"
  write_step
  report
  STEP=""
}

# t CMD...: CMD within what is left of the step's time (exit 124 when it ran out: the step becomes "timeout").
t() {
  local left=$((STEP_DEADLINE - $(now)))
  if [ "$left" -lt 1 ]; then
    STEP_STATUS=timeout
    return 124
  fi
  timeout -k 2 "$left" "$@"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then STEP_STATUS=timeout; fi
  return $rc
}

# check ID LOG SUBCOMMAND ARGS...: one comparison of scripts/gpu-check.py; its verdict line goes to LOG, its
# details to WORK/checks/NN-ID.json (numbered in the order run); counted in CHECKS_PASSED / CHECKS_FAILED.
CHECKS_RUN=0 CHECKS_PASSED=0 CHECKS_FAILED=0 CMDS_RUN=0 CMDS_FAILED=0 CMDS_SKIPPED=0 FIRST_ERROR=""
check() {
  local id=$1 log=$2
  shift 2
  CHECKS_RUN=$((CHECKS_RUN + 1))
  if "${PY[@]}" "$@" --json "$WORK/checks/$(printf %02d $CHECKS_RUN)-$id.json" >> "$log" 2>&1; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
  else
    CHECKS_FAILED=$((CHECKS_FAILED + 1))
    fail
  fi
}

fail() {  # a failed command or check
  [ "$STEP_STATUS" = pass ] && STEP_STATUS=fail
  return 0
}

exec 3>&1 4>&2  # the script's own stdout and stderr, for the exit trap (it may fire inside a redirected call)
on_exit() {
  local rc=$?
  exec 1>&3 2>&4
  if [ -n "$STEP" ]; then  # killed or interrupted inside a step
    STEP_STATUS=killed STEP_SUMMARY="interrupted (exit $rc) after $(($(now) - STEP_T0)) s"
    write_step
  fi
  report
  [ -f "$WORK/summary.txt" ] && cat "$WORK/summary.txt"
}
trap on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# ============================================ the steps ============================================

CMAKE_EXTRA=()
step_deps() {
  local missing=()
  [ -e /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)
  [ -e /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
  { command -v pkg-config > /dev/null && pkg-config --exists libpcre2-8; } || missing+=(libpcre2-dev/pkgconf)
  ls /usr/lib/x86_64-linux-gnu/libopenblas* /usr/lib/x86_64-linux-gnu/openblas*/libopenblas* > /dev/null 2>&1 ||
    missing+=(libopenblas-dev)
  local tools=()
  for x in cmake python3 timeout; do command -v $x > /dev/null || tools+=("$x"); done
  [ "$DRY" = 1 ] || command -v nvcc > /dev/null || tools+=(nvcc)
  if [ ${#tools[@]} -gt 0 ]; then
    STEP_STATUS=fail STEP_SUMMARY="this image lacks ${tools[*]}: it cannot build here"
    return
  fi
  # Open MPI only for the nccl step (NCCL is bootstrapped through MPI): mpirun and the mpicc wrapper (which
  # CMake's FindMPI asks for mpi.h and libmpi), else the copy carried in .gpudeps/openmpi.
  local mpi=""
  if [[ " ${STEP_ORDER[*]} " == *" nccl "* ]] &&
    { ! command -v mpirun > /dev/null || ! command -v mpicc > /dev/null || [ "${GPU_CHECK_PRETEND_MISSING:-0}" = 1 ]; }; then
    mpi=missing
  fi
  # GPU_CHECK_PRETEND_MISSING=1 takes the carried packages even where the system has them (a test of that path).
  [ "${GPU_CHECK_PRETEND_MISSING:-0}" = 1 ] && missing+=("(pretended)")
  if [ ${#missing[@]} -eq 0 ] && [ -z "$mpi" ]; then
    STEP_SUMMARY="system packages present"
    return
  fi
  local P=${GPU_CHECK_PREFIX:-/tmp/miniseq-deps} f
  local A=$P/usr/lib/x86_64-linux-gnu
  mkdir -p "$P"
  if [ ${#missing[@]} -gt 0 ]; then
    local debs=()
    [ -d .gpudeps ] && mapfile -t debs < <(find .gpudeps -maxdepth 1 -name '*.deb' | sort)
    if [ ${#debs[@]} -eq 0 ]; then
      STEP_STATUS=fail
      STEP_SUMMARY="missing ${missing[*]} and no .gpudeps/: on the development machine run 'bash scripts/gpu-deps.sh', then run this again with carry=[\".gpudeps\"]"
      return
    fi
    for f in "${debs[@]}"; do t dpkg -x "$f" "$P" || { fail; STEP_NOTES+=("dpkg -x $f failed"); }; done
    export PATH=$P/usr/bin:$PATH
    export PKG_CONFIG_PATH=$A/pkgconfig:$P/usr/share/pkgconfig PKG_CONFIG_SYSROOT_DIR=$P
    export PKG_CONFIG_LIBDIR=$A/pkgconfig:$P/usr/share/pkgconfig
    export LD_LIBRARY_PATH=$A:$A/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    CMAKE_EXTRA=(-DCMAKE_PREFIX_PATH="$P/usr;$A/cmake" -DOPENBLAS_LIB="$A/openblas-openmp/libopenblas.so"
      -DCBLAS_INCLUDE_DIR="$P/usr/include/x86_64-linux-gnu/openblas-openmp" -DGTEST_ROOT="$P/usr"
      -DPKG_CONFIG_EXECUTABLE="$P/usr/bin/pkgconf")
    STEP_SUMMARY="missing ${missing[*]}: unpacked ${#debs[@]} carried packages into $P"
  else
    STEP_SUMMARY="system packages present"
  fi
  [ -n "$mpi" ] && deps_openmpi "$P"
  deps_env_file
}

# deps_openmpi PREFIX: unpacks the Open MPI 4.1 carried in .gpudeps/openmpi (scripts/gpu-deps.sh) into PREFIX and
# relocates it there: dpkg -x runs no maintainer scripts, so the links update-alternatives would make are made
# here, and Open MPI (OPAL_PREFIX, OPAL_SYSCONFDIR: Debian's /etc/openmpi settings) and PMIx (its plugin folder)
# are told where they now live. Without the carried packages the nccl step is skipped, as before.
deps_openmpi() {
  local P=$1 A=$1/usr/lib/x86_64-linux-gnu f debs=() fb=() n=0 so target
  [ -d .gpudeps/openmpi ] && mapfile -t debs < <(find .gpudeps/openmpi -maxdepth 1 -name '*.deb' | sort)
  if [ ${#debs[@]} -eq 0 ]; then
    STEP_NOTES+=("no mpirun/mpicc and no .gpudeps/openmpi (scripts/gpu-deps.sh): the build has no MPI, the nccl step is skipped")
    return
  fi
  for f in "${debs[@]}"; do t dpkg -x "$f" "$P" || { fail; STEP_NOTES+=("dpkg -x $f failed"); }; done
  for f in mpirun mpiexec mpicc mpicxx mpic++; do ln -sfn "$f.openmpi" "$P/usr/bin/$f"; done
  for f in "$P"/usr/lib/libpsm1/libpsm_infinipath.so.1.*; do [ -e "$f" ] && ln -sfn "../libpsm1/${f##*/}" "$A/libpsm_infinipath.so.1"; done
  # Libraries of a base system (.gpudeps/openmpi/fallback): linked into PREFIX/fallback-lib, last on the path, only
  # where the image lacks them, so that they never shadow the image's own (newer) copies.
  [ -d .gpudeps/openmpi/fallback ] && mapfile -t fb < <(find .gpudeps/openmpi/fallback -maxdepth 1 -name '*.deb' | sort)
  mkdir -p "$P/fallback-lib"
  local ldc
  ldc=$(command -v ldconfig || echo /sbin/ldconfig)
  for f in "${fb[@]}"; do t dpkg -x "$f" "$P/fallback" || { fail; STEP_NOTES+=("dpkg -x $f failed"); }; done
  for so in "$P"/fallback/{usr/,}lib/x86_64-linux-gnu/lib*.so.[0-9]; do
    [ -e "$so" ] || continue
    target=$("$ldc" -p 2> /dev/null | awk -v n="${so##*/}" '$1 == n { print $NF; exit }')
    if [ -z "$target" ] || [ ! -e "$target" ]; then ln -sfn "$so" "$P/fallback-lib/${so##*/}" && n=$((n + 1)); fi
  done
  export PATH=$P/usr/bin:$PATH OPAL_PREFIX=$P/usr OPAL_SYSCONFDIR=$P/etc/openmpi
  export PMIX_MCA_mca_base_component_path=$A/pmix2/lib/pmix
  export LD_LIBRARY_PATH=$A:$P/lib/x86_64-linux-gnu:$A/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$P/fallback-lib
  # mpirun on one node starts its processes itself, but Open MPI 4.1 refuses to start at all when its rsh launcher
  # finds neither ssh nor rsh ("plm_rsh_agent: ssh : rsh"); an agent that exists (and is never called) satisfies it.
  { command -v ssh || command -v rsh; } > /dev/null || export OMPI_MCA_plm_rsh_agent=false
  CMAKE_EXTRA+=(-DMPI_C_COMPILER="$P/usr/bin/mpicc" -DMPIEXEC_EXECUTABLE="$P/usr/bin/mpirun")
  local extra=""
  [ "$n" -gt 0 ] && extra=", $n base libraries the image lacks"
  STEP_SUMMARY="$STEP_SUMMARY; no MPI: unpacked the carried Open MPI (${#debs[@]} packages$extra) into $P"
}

# deps_env_file: BUILD/deps-env.sh, the environment the deps step exported, to run the built programs by hand
# (`. build-gpu-check/deps-env.sh; mpirun -np 1 build-gpu-check/miniseq train ...`).
deps_env_file() {
  mkdir -p "$BUILD"
  {
    echo "# written by scripts/gpu-check.sh (step deps)"
    local v
    for v in PATH LD_LIBRARY_PATH PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR OPAL_PREFIX OPAL_SYSCONFDIR \
      PMIX_MCA_mca_base_component_path OMPI_MCA_plm_rsh_agent; do
      [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
    done
    echo "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  } > "$BUILD/deps-env.sh"
}

step_build() {
  local gen=() cuda=ON targets=(miniseq) x
  for x in "${STEP_ORDER[@]}"; do
    case $x in
      ops) targets+=(test_ops_cuda) ;;
      golden) targets+=(test_grad_golden_cuda) ;;
      bench) targets+=(bench_step_cuda) ;;
    esac
  done
  # Ninja when available, unless the build folder was configured with another generator.
  if command -v ninja > /dev/null &&
    { [ ! -f "$BUILD/CMakeCache.txt" ] || grep -q 'CMAKE_GENERATOR:INTERNAL=Ninja' "$BUILD/CMakeCache.txt"; }; then
    gen=(-G Ninja)
  fi
  if [ "$DRY" = 1 ] && ! command -v nvcc > /dev/null; then cuda=OFF targets=(miniseq); fi
  {
    t cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DMINISEQ_CUDA=$cuda -DMINISEQ_ONEDNN=OFF \
      -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_FLAGS=-lineinfo "${CMAKE_EXTRA[@]}" &&
      t cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}"
  } >> "$OUT/build.log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    STEP_SUMMARY="the build ran past its $STEP_TIMEOUT s (build.log; GPU_CHECK_BUDGET_build raises it)"
  elif [ $rc -ne 0 ]; then
    fail
    STEP_SUMMARY="build failed (exit $rc; the end of build.log has the error)"
    tail -20 "$OUT/build.log" | grep -iE 'error|fatal' | head -3 | while read -r l; do log "  $l"; done
  else
    STEP_SUMMARY="${targets[*]} ($JOBS jobs, CUDA $cuda)"
  fi
}

run_gtest() {  # NAME BINARY: one CUDA test program; a dry run lists its cases instead
  local name=$1 bin=$BUILD/$2 logf=$OUT/$1.log
  if [ "$DRY" = 1 ] && [ ! -x "$bin" ]; then
    STEP_STATUS=skipped STEP_SUMMARY="dry run: $2 not built (no nvcc)"
    return
  fi
  if [ "$DRY" = 1 ] && { [ "${GPU_CHECK_SELFTEST:-0}" != 1 ] || [ "$name" != ops ]; }; then
    t "$bin" --gtest_list_tests > "$logf" 2>&1 || fail
    STEP_STATUS=${STEP_STATUS/pass/skipped}
    STEP_SUMMARY="dry run: $(grep -c '^  ' "$logf") cases listed, not run (no GPU)"
    return
  fi
  t "$bin" --gtest_output=json:"$WORK/$name.json" > "$logf" 2>&1
  local rc=$? filter
  filter=$("${PY[@]}" failed "$WORK/$name.json" "$logf")
  local ok
  ok=$(grep -c '^\[       OK \]' "$logf")
  if [ $rc -eq 0 ]; then
    STEP_SUMMARY="$ok cases passed"
  else
    fail
    [ -n "$filter" ] || filter='*'
    FAILED_TESTS+=("$2|$filter")
    STEP_SUMMARY="exit $rc: $ok passed, failed or crashed: ${filter//:/, }"
  fi
  [ "$STEP_STATUS" = timeout ] && STEP_SUMMARY="timed out: $ok passed, running: ${filter:-?}"
}

step_ops() { run_gtest ops test_ops_cuda; }
step_golden() { run_gtest golden test_grad_golden_cuda; }

# c LOG CMD...: a command of the cli/offload steps (stdout as the caller directs), logged with its time; a
# failure adds the end of its stderr to LOG and is remembered for the sanitize step.
c() {
  local logf=$1 t1 rc
  shift
  if [ $((STEP_DEADLINE - $(now))) -lt 1 ]; then
    echo "\$ $*    # not run: the step's time is up" >> "$logf"
    CMDS_SKIPPED=$((CMDS_SKIPPED + 1))
    return 124
  fi
  t1=$(now)
  t "$@" 2> "$WORK/last.err"
  rc=$?
  cat "$WORK/last.err" >> "$WORK/stderr.log"
  echo "\$ $*    # exit $rc, $(($(now) - t1)) s" >> "$logf"
  CMDS_RUN=$((CMDS_RUN + 1))
  if [ $rc -ne 0 ]; then
    CMDS_FAILED=$((CMDS_FAILED + 1))
    local why
    why=$(grep -v '^\s*$' "$WORK/last.err" | tail -1 | cut -c1-160)
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="timed out after $(($(now) - t1)) s"
    [ -n "$FIRST_ERROR" ] || FIRST_ERROR="$(basename "$1") ${2:-}: $why (exit $rc)"
    tail -5 "$WORK/last.err" | sed 's/^/  | /' >> "$logf"
    [ $rc -ne 124 ] && [ $rc -ne 137 ] && FAILED_CMDS+=("$*")  # a timeout is no fault to look for
    fail
  fi
  return $rc
}

cmds_summary() {
  local skipped=""
  [ "$CMDS_SKIPPED" -eq 0 ] || skipped=", $CMDS_SKIPPED not run (no time left)"
  if [ "$CMDS_FAILED" -eq 0 ]; then
    echo "$CMDS_RUN commands ran$skipped"
  else
    echo "$CMDS_FAILED of $CMDS_RUN commands failed$skipped, first: $FIRST_ERROR"
  fi
}

step_cli() {
  local L=$OUT/cli.log m s st b cache
  echo "== cli: miniseq grad, eval and generate on $DEV vs the golden loss and transformers ==" >> "$L"
  c "$L" "$BUILD/miniseq" grad --device "$DEV" --model $G/llama_basic/model --data $G/llama_basic/batch.jsonl \
    --out "$WORK/grads.safetensors" > /dev/null &&
    check grad "$L" grad "$WORK/grads.safetensors" llama_basic "$DEV"
  # model, window, stride, batch: the issue's case first, then a sliding window, llama3 RoPE, Qwen3.
  for e in "llama_basic 48 20 3" "mistral_window 48 16 2" "llama31_rope_llama3 48 16 2" "qwen3_tied 40 20 3"; do
    read -r m s st b <<< "$e"
    c "$L" "$BUILD/miniseq" eval --device "$DEV" --model "$G/$m/model" --data tests/data/eval/stream.bin \
      --seq_len "$s" --stride "$st" --batch "$b" --json --progress False > "$WORK/eval-$m.json" &&
      check "eval-$m" "$L" eval "$WORK/eval-$m.json" "$m" "$s" "$st" "$b" "$DEV"
  done
  local prompt new
  for m in mistral_window llama31_rope_llama3 qwen3_tied; do
    read -r prompt new <<< "$("${PY[@]}" prompt "$m")"
    for cache in True False; do
      c "$L" "$BUILD/miniseq" generate --device "$DEV" --model "$G/$m/model" --prompt_ids "$prompt" \
        --max_new_tokens "$new" --stop_at_eos False --use_cache $cache --json > "$WORK/gen-$m-$cache.json" &&
        check "generate-$m-cache$cache" "$L" generate "$WORK/gen-$m-$cache.json" "$m" $cache "$DEV"
    done
  done
  STEP_SUMMARY="$CHECKS_PASSED checks passed, $CHECKS_FAILED failed; $(cmds_summary)"
  [ "$DRY" = 1 ] && STEP_NOTES+=("dry run: ran on the CPU (fp32) with the CPU's tolerances; on the GPU the same commands run with --device cuda")
}

# nccl (docs/distributed.md): the NCCL communicator, which CI only compiles. With one GPU: mpirun -np 1 trains the
# demo with --zero_stage 2, so every gradient is summed through NCCL (send/recv to itself, the rank-order kernel),
# and the weights must be the bits of a run without a launcher (the single-process communicator); the same for the
# optimizer in backward (each group all-reduced through NCCL inside the backward, then updated) and for ZeRO-2 in
# backward with offloaded shards (each piece reduced onto its owner, downloaded, updated on the host, uploaded).
# With two or more GPUs also 2 ranks against 1 process with twice the accumulation (within 1e-6 is the CPU's bound; bf16 here, so
# the check only reports the difference). Skipped without mpirun or without NCCL in the build. A dry run runs the
# same commands on the CPU through the MPI communicator (2 ranks with --oversubscribe), to exercise mpirun and the
# Open MPI that the deps step found or unpacked. Then `grad --sequence_parallel` (Ulysses) through the same
# communicator.
step_nccl() {
  local L=$OUT/cli.log R=$WORK/nccl gpus=0 ranks=1 via=NCCL
  [ "$DRY" = 1 ] && via=MPI
  echo "== nccl: train --device $DEV through $via vs no launcher (ZeRO-2, optimizer in backward) ==" >> "$L"
  local comm=$BUILD/CMakeFiles/miniseq_cuda.dir/src/miniseq/backend/cuda/nccl_communicator.cu.o
  [ "$DRY" = 1 ] && comm=$BUILD/CMakeFiles/miniseq_core.dir/src/miniseq/dist/mpi_communicator.cpp.o
  if ! command -v mpirun > /dev/null 2>&1 || [ ! -f "$comm" ]; then
    STEP_STATUS=skipped
    STEP_SUMMARY="no mpirun or no $([ "$DRY" = 1 ] && echo MPI || echo NCCL) in the build (.gpudeps/openmpi: scripts/gpu-deps.sh)"
    return
  fi
  rm -rf "$R" && mkdir -p "$R"
  local args=(train --device "$DEV" --preset demo --model_max_length 256 --max_steps 3 --save_strategy no
    --logging_steps 1)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # No rank pinned to one core (the host optimizer's threads); no cross-memory attach between ranks (refused in
  # some containers; the ranks exchange only the NCCL id and a few host values through MPI).
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  local mpirun=(mpirun --bind-to none)
  [ "$DRY" = 1 ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} && mpirun+=(--oversubscribe)
  log "  mpirun: $(command -v mpirun) ($(mpirun --version 2> /dev/null | head -1))"
  local variant extra
  for variant in zero2 in_backward zero2_offload_in_backward; do
    case $variant in
      zero2) extra=(--zero_stage 2) ;;
      in_backward) extra=(--optimizer_in_backward True) ;;
      zero2_offload_in_backward) extra=(--zero_stage 2 --optimizer_in_backward True --offload_optimizer True) ;;
    esac
    c "$L" "${mpirun[@]}" -np 1 "$BUILD/miniseq" "${args[@]}" "${extra[@]}" --output_dir "$R/nccl1-$variant" > /dev/null
    c "$L" "$BUILD/miniseq" "${args[@]}" "${extra[@]}" --output_dir "$R/single-$variant" > /dev/null
    if cmp -s "$R/nccl1-$variant/model.safetensors" "$R/single-$variant/model.safetensors"; then
      CHECKS_PASSED=$((CHECKS_PASSED + 1))
      echo "nccl: $variant, 1 rank through $via = no launcher, bit for bit" >> "$L"
    else
      CHECKS_FAILED=$((CHECKS_FAILED + 1))
      echo "nccl: $variant, 1 rank through $via differs from the run without a launcher" >> "$L"
      fail
    fi
  done
  # Sequence parallelism (docs/distributed.md): on one GPU only P = 1 can run, through NCCL: the head exchange's
  # copies and its all-to-all with itself must leave the gradients of a run without a launcher bit for bit. With
  # two ranks also P = 2 against one process (bf16 on the GPU: the losses are reported; the CPU's tests hold the
  # 1e-6 bound).
  "$PYTHON" -c "
import json
with open('$R/sp.jsonl', 'w') as f:
    for l in open('$G/llama_basic/batch.jsonl'):
        d = json.loads(l); f.write(json.dumps({k: v[:36] for k, v in d.items() if k in ('input_ids', 'labels')}) + '\n')"
  local gargs=(grad --device "$DEV" --model "$G/llama_basic/model" --data "$R/sp.jsonl")
  c "$L" "${mpirun[@]}" -np 1 "$BUILD/miniseq" "${gargs[@]}" --sequence_parallel 1 --out "$R/sp1.safetensors" > /dev/null
  c "$L" "$BUILD/miniseq" "${gargs[@]}" --out "$R/sp0.safetensors" > /dev/null
  if cmp -s "$R/sp1.safetensors" "$R/sp0.safetensors"; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
    echo "nccl: grad --sequence_parallel 1 through $via = no launcher, bit for bit" >> "$L"
  else
    CHECKS_FAILED=$((CHECKS_FAILED + 1))
    echo "nccl: grad --sequence_parallel 1 through $via differs from the run without a launcher" >> "$L"
    fail
  fi
  [ "$DRY" = 1 ] || gpus=$(nvidia-smi -L 2> /dev/null | wc -l)
  { [ "$gpus" -ge 2 ] || [ "$DRY" = 1 ]; } && ranks=2
  if [ "$ranks" = 2 ]; then
    c "$L" "${mpirun[@]}" -np 2 "$BUILD/miniseq" "${gargs[@]}" --sequence_parallel 2 --out "$R/sp2.safetensors" |
      grep '^loss' | sed 's/^/nccl: grad --sequence_parallel 2: /' >> "$L"
    "$BUILD/miniseq" "${gargs[@]}" --out "$R/sp0.safetensors" | grep '^loss' | sed 's/^/nccl: grad, one process: /' >> "$L"
    c "$L" "${mpirun[@]}" -np 2 "$BUILD/miniseq" "${args[@]}" --zero_stage 2 --output_dir "$R/nccl2" > /dev/null
    c "$L" "$BUILD/miniseq" "${args[@]}" --zero_stage 2 --gradient_accumulation_steps 2 --output_dir "$R/ga2" \
      > /dev/null
    cmp -s "$R/nccl2/model.safetensors" "$R/ga2/model.safetensors" &&
      echo "nccl: 2 ranks = 1 process with accumulation 2, bit for bit" >> "$L" ||
      echo "nccl: 2 ranks differ from 1 process with accumulation 2 (bf16; compare the logged losses)" >> "$L"
  fi
  STEP_SUMMARY="$CHECKS_PASSED checks passed, $CHECKS_FAILED failed; $(cmds_summary); $gpus GPU(s), up to $ranks rank(s)"
  [ "$DRY" = 1 ] && STEP_NOTES+=("dry run: ran on the CPU through the MPI communicator (no NCCL); on the GPU the same commands run with --device cuda")
}

step_offload() {
  local L=$OUT/cli.log D=$WORK/offload-data.jsonl R=$WORK/runs
  echo "== offload: train --device $DEV, asynchronous policies vs their synchronous twins ==" >> "$L"
  "$PYTHON" -c "
import json, random
random.seed(7)
with open('$D', 'w') as f:
    for _ in range(20):
        f.write(json.dumps({'input_ids': [random.randrange(3, 131) for _ in range(20)]}) + '\n')"
  # 8 steps of 2 x 20 tokens on the 2-layer golden Llama. Offloaded layer inputs alone issue 2 downloads + 2
  # uploads per micro-batch, so every offloading run issues >= 32 copies (64 with accumulation 2): the backend's
  # ring of 16 copy events wraps at least twice. A constant schedule, so that a resumed run's learning rates do
  # not depend on --max_steps.
  local base=(train --device "$DEV" --model_name_or_path "$G/llama_basic/model" --data_path "$D" --low_rank_training False
    --model_max_length 20 --per_device_train_batch_size 2 --max_steps 8 --learning_rate 2e-3
    --lr_scheduler_type constant_with_warmup --warmup_steps 1 --logging_steps 1 --save_strategy no
    --weight_decay 0.01 --max_grad_norm 1.0 --seed 1)
  local ga=(--gradient_accumulation_steps 2 --per_device_train_batch_size 1)
  train_run() {  # NAME FLAGS...
    local name=$1
    shift
    rm -rf "${R:?}/$name"
    c "$L" "$BUILD/miniseq" "${base[@]}" --output_dir "$R/$name" "$@" >> "$WORK/stdout.log"
  }
  train_run default
  train_run device_async --offload_checkpoints -1 --optimizer_in_backward True
  train_run host --offload_optimizer True
  train_run host_async --offload_optimizer True --offload_checkpoints -1 --optimizer_in_backward True
  train_run resumed --max_steps 4 --save_strategy steps --save_steps 4 &&
    c "$L" "$BUILD/miniseq" "${base[@]}" --output_dir "$R/resumed" --resume_from_checkpoint True >> "$WORK/stdout.log"
  train_run ga_default "${ga[@]}"
  train_run ga_device_async "${ga[@]}" --offload_checkpoints -1
  train_run ga_host "${ga[@]}" --offload_optimizer True
  train_run ga_host_async "${ga[@]}" --offload_optimizer True --offload_checkpoints -1
  # Same arithmetic, only the copies and the order differ: bitwise. Host vs device AdamW: --close (FMA).
  check same-device-async "$L" same "$R/default" "$R/device_async"
  check same-host-async "$L" same "$R/host" "$R/host_async"
  check same-resume "$L" same "$R/default" "$R/resumed"
  check same-ga-device-async "$L" same "$R/ga_default" "$R/ga_device_async"
  check same-ga-host-async "$L" same "$R/ga_host" "$R/ga_host_async"
  check close-host-vs-device "$L" same "$R/default" "$R/host_async" --close
  check close-ga-host-vs-device "$L" same "$R/ga_default" "$R/ga_host_async" --close
  # LoRA+ (train's default; the flags after base's --low_rank_training False win): the frozen bf16 base, the
  # adapter and embed/norm trained; the outputs are the adapter + trainable_params files.
  local lora=(--low_rank_training True --trainable_params embed,norm)
  train_run lora_default "${lora[@]}"
  train_run lora_host_async "${lora[@]}" --offload_optimizer True --offload_checkpoints -1 --optimizer_in_backward True
  train_run lora_resumed "${lora[@]}" --max_steps 4 --save_strategy steps --save_steps 4 &&
    c "$L" "$BUILD/miniseq" "${base[@]}" "${lora[@]}" --output_dir "$R/lora_resumed" --resume_from_checkpoint True \
      >> "$WORK/stdout.log"
  check same-lora-resume "$L" same "$R/lora_default" "$R/lora_resumed"
  check close-lora-host-vs-device "$L" same "$R/lora_default" "$R/lora_host_async" --close
  STEP_SUMMARY="$CHECKS_PASSED comparisons passed, $CHECKS_FAILED failed; $(cmds_summary)"
  [ "$DRY" = 1 ] && STEP_NOTES+=("dry run: ran on the CPU, where host and device AdamW are the same code (bitwise)")
}

SANITIZER=""
step_sanitize() {
  local L=$OUT/sanitizer.log
  if [ ${#FAILED_TESTS[@]} -eq 0 ] && [ ${#FAILED_CMDS[@]} -eq 0 ]; then
    STEP_STATUS="not needed" STEP_SUMMARY="no failure to rerun"
    return
  fi
  SANITIZER=$(command -v compute-sanitizer)
  [ -z "$SANITIZER" ] && [ -x /usr/local/cuda/compute-sanitizer/compute-sanitizer ] &&
    SANITIZER=/usr/local/cuda/compute-sanitizer/compute-sanitizer
  local entry bin filter n=0 sync=(env MINISEQ_CUDA_SYNC=1 CUDA_LAUNCH_BLOCKING=1)
  local san_opts=(--error-exitcode 99 --print-limit 10 --show-backtrace device)
  for entry in "${FAILED_TESTS[@]}"; do
    bin=$BUILD/${entry%%|*} filter=${entry#*|}
    echo "== $bin --gtest_filter=$filter: synchronous launches (MINISEQ_CUDA_SYNC=1 CUDA_LAUNCH_BLOCKING=1) ==" >> "$L"
    sub 0.2 "${sync[@]}" "$bin" --gtest_filter="$filter" >> "$L" 2>&1
    if [ -z "$SANITIZER" ]; then
      STEP_NOTES+=("compute-sanitizer not found: only the synchronous rerun")
      continue
    fi
    echo "== compute-sanitizer --tool memcheck $bin --gtest_filter=$filter ==" >> "$L"
    sub 0.5 "${sync[@]}" "$SANITIZER" --tool memcheck "${san_opts[@]}" "$bin" --gtest_filter="$filter" >> "$L" 2>&1
    n=$((n + 1))
    local af
    af=$(tr ':' '\n' <<< "$filter" | grep -i attention | paste -sd:)  # racecheck: the attention cases only
    [ "$filter" = '*' ] && af='*Attention*'
    if [ -n "$af" ]; then
      echo "== compute-sanitizer --tool racecheck $bin --gtest_filter=$af ==" >> "$L"
      sub 0.6 "$SANITIZER" --tool racecheck --error-exitcode 99 --print-limit 10 "$bin" --gtest_filter="$af" >> "$L" 2>&1
    fi
  done
  if [ ${#FAILED_CMDS[@]} -gt 0 ] && [ -n "$SANITIZER" ] && [ "$DRY" != 1 ]; then
    echo "== compute-sanitizer --tool memcheck ${FAILED_CMDS[0]} ==" >> "$L"
    # shellcheck disable=SC2086 # the command line was logged as words
    sub 0.9 "${sync[@]}" "$SANITIZER" --tool memcheck "${san_opts[@]}" ${FAILED_CMDS[0]} >> "$L" 2>&1
  fi
  "${PY[@]}" sanitizer "$L" --json "$WORK/sanitizer.json" > "$WORK/sanitizer.txt"
  STEP_SUMMARY="$(head -1 "$WORK/sanitizer.txt"); reruns of ${#FAILED_TESTS[@]} test programs, ${#FAILED_CMDS[@]} failed commands (sanitizer.log)"
  while read -r l; do STEP_NOTES+=("$l"); done < <(tail -n +2 "$WORK/sanitizer.txt" | head -6)
  # The reruns are diagnostics: their failures do not change the verdict beyond the steps that failed.
  [ "$STEP_STATUS" = timeout ] && STEP_NOTES+=("a rerun ran out of time: sanitizer.log has what it printed")
  STEP_STATUS="done"
}

# sub FRACTION CMD...: CMD within FRACTION of what is left of the step (the later reruns keep their share).
sub() {
  local frac=$1
  shift
  local left=$((STEP_DEADLINE - $(now)))
  local lim
  lim=$(awk -v l="$left" -v f="$frac" 'BEGIN { x = int(l * f); print (x < 1 ? 1 : x) }')
  [ "$left" -lt 2 ] && return 124
  timeout -k 2 "$lim" "$@"
}

step_bench() {
  local L=$OUT/bench.log seqs=(4096 16384 32768)
  if [ "$DRY" = 1 ]; then
    STEP_STATUS=skipped STEP_SUMMARY="dry run: bench_step_cuda needs a GPU"
    [ -x "$BUILD/bench_step_cuda" ] || STEP_SUMMARY="$STEP_SUMMARY (and was not built: no nvcc)"
    return
  fi
  # ~15 s per length (weight generation on one core, issue 19) + 4 steps: only 32K, the target, when short.
  [ $((STEP_DEADLINE - $(now))) -lt 75 ] && seqs=(32768) && STEP_NOTES+=("little time left: S = 32768 only")
  local lb=()  # line-buffered stdout: a timeout keeps the table rows of the lengths that finished
  command -v stdbuf > /dev/null && lb=(stdbuf -oL)
  t "${lb[@]}" "$BUILD/bench_step_cuda" --layers 4 --json "$WORK/bench.json" "${seqs[@]}" > "$L" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    STEP_SUMMARY="$(grep -o 'GEMM.*TFLOP/s' "$L" | head -1); every length bitwise repeatable"
  else
    fail
    STEP_SUMMARY="exit $rc (1: a length was not bitwise repeatable; 2: an error; 124: timed out — bench.log has the lengths that finished)"
  fi
}

# The host-offload policies at Mistral-7B scale (issue 7; GPU_CHECK_STEPS="deps build offload_perf", or
# scripts/gpu-offload-check.sh): a random Mistral-7B in bf16 (tiny-model) trains GPU_CHECK_OFFLOAD_STEPS (3) steps
# of GPU_CHECK_OFFLOAD_S (32768) tokens (a) with AdamW in the backward on the device, bf16 moments, (b) with the
# optimizer state and fp32 master weights on the host, (c) (b) + every layer input on the host. Reports tokens/s,
# (b)/(a) and (c)/(a) (target >= 85% at 32K), the planned memory and the device peak sampled by nvidia-smi.
step_offload_perf() {
  local L=$OUT/bench.log S=${GPU_CHECK_OFFLOAD_S:-32768} steps=${GPU_CHECK_OFFLOAD_STEPS:-3} M=$BUILD/mistral-7b-random
  if [ "$DRY" = 1 ]; then
    STEP_STATUS=skipped STEP_SUMMARY="dry run: needs a GPU"
    return
  fi
  echo "== offload_perf: Mistral-7B-sized, S=$S, $steps steps per policy ==" >> "$L"
  if [ ! -f "$M/config.json" ]; then
    c "$L" "$BUILD/miniseq" tiny-model --out "$M" --arch mistral --hidden_size 4096 --intermediate_size 14336 \
      --num_hidden_layers 32 --num_attention_heads 32 --num_key_value_heads 8 --vocab_size 32000 \
      --max_position_embeddings 1048576 --sliding_window 0 --dtype bfloat16 --max_shard_bytes 5000000000 \
      >> "$WORK/stdout.log" || { STEP_SUMMARY="could not write the random Mistral-7B"; return; }
  fi
  "$PYTHON" -c "
import json, random
random.seed(0)
with open('$WORK/offload-perf.jsonl', 'w') as f:
    for _ in range($steps + 1):
        f.write(json.dumps({'input_ids': [random.randrange(3, 32000) for _ in range($S)]}) + '\n')"
  local name flags tps=() i=0 smi peak rate
  for name in device host_optimizer host_all; do
    case $name in
      device) flags=(--moments_dtype bfloat16) ;;
      host_optimizer) flags=(--offload_optimizer True) ;;
      host_all) flags=(--offload_optimizer True --offload_checkpoints -1) ;;
    esac
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$WORK/$name.smi" 2> /dev/null &
    smi=$!
    # Each run gets an equal share of what is left (the first of 3 a third).
    echo "\$ train $name ${flags[*]}" >> "$L"
    sub "$(awk -v i=$i 'BEGIN { print 1 / (3 - i) }')" "$BUILD/miniseq" train --model_name_or_path "$M" \
      --data_path "$WORK/offload-perf.jsonl" --device cuda --output_dir "$WORK/perf-$name" --model_max_length "$S" \
      --max_steps "$steps" --logging_steps 1 --save_strategy no --learning_rate 1e-5 --max_grad_norm 0 \
      --optimizer_in_backward True --low_rank_training False "${flags[@]}" >> "$L" 2>&1 || fail
    kill $smi 2> /dev/null
    peak=$(sort -n "$WORK/$name.smi" 2> /dev/null | tail -1)
    rate=$(grep -o 'tokens/s [0-9.]*' "$L" | tail -1 | awk '{print $2}')
    tps+=("${rate:-0}")
    STEP_NOTES+=("$name: tokens/s ${rate:-?}, device peak (nvidia-smi) ${peak:-?} MiB")
    i=$((i + 1))
  done
  STEP_SUMMARY=$("$PYTHON" -c "
a, b, c = (float(x or 0) for x in '${tps[*]}'.split())
print(f'S=$S: host optimizer {b / a:.1%} of on-device, + host checkpoints {c / a:.1%} (target >= 85%)' if a else 'no on-device baseline')")
}

# ============================================ main ============================================
log "gpu-check: $([ "$DRY" = 1 ] && echo 'DRY RUN (no GPU: CUDA steps skipped)' || echo GPU), budget $TOTAL_BUDGET s, build $BUILD, $JOBS jobs"
for s in "${STEP_ORDER[@]}"; do
  run_step "$s"
  st=$("$PYTHON" -c "import json; print(json.load(open('$WORK/steps/$s.json'))['status'])")
  if { [ "$s" = deps ] || [ "$s" = build ]; } && [ "$st" != pass ]; then
    log "stopping: the $s step did not pass"
    exit 1
  fi
done
final=$("$PYTHON" -c "import json; print(json.load(open('$OUT/gpu-check.json'))['overall'])")
log "total $(($(now) - T0)) s: $final"
[ "$final" = PASS ] || [ "$final" = "DRY RUN" ]
