#!/usr/bin/env bash
# The bounded fuzz run of `make test` (fuzz/README.md): builds the libFuzzer harnesses with clang, ASan and UBSan in
# BUILD (the build output goes to BUILD.log), then runs each for SECONDS from its committed seeds. Any crash,
# sanitizer report, leak, or input past the memory or time limit fails the run, with the harness's log.
#   bash scripts/fuzz-smoke.sh [BUILD=build-fuzz] [SECONDS=10]
set -uo pipefail
build=${1:-build-fuzz}
seconds=${2:-10}
cd "$(dirname "$0")/.."
harnesses=(model_config tokenizer safetensors safetensors_index jsonl token_bin trainer_state sft_records)
if ! command -v clang++ > /dev/null; then
  echo "fuzz smoke: FAILED: clang++ not found (bash scripts/install-deps.sh installs clang and libclang-rt-14-dev)"
  exit 1
fi
echo "fuzz smoke: building ${#harnesses[@]} harnesses (clang, ASan + UBSan; log: $build.log)"
targets=()
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
if ! { CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMINISEQ_FUZZ=ON -DMINISEQ_CUDA=OFF \
         -DMINISEQ_ONEDNN=OFF && cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"; } > "$build.log" 2>&1; then
  tail -30 "$build.log"
  echo "fuzz smoke: FAILED: the harnesses did not build (see $build.log)"
  exit 1
fi
failed=0
for h in "${harnesses[@]}"; do
  corpus=$(mktemp -d)
  log="$build/fuzz_$h.log"
  if "$build/fuzz/fuzz_$h" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
       -artifact_prefix="$build/fuzz_$h-" \
       "$corpus" "tests/data/fuzz/${h/model_config/config}" > "$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    echo "fuzz smoke: fuzz_$h: ${runs:-?} executions in ${seconds} s, no finding"
  else
    tail -40 "$log"
    echo "fuzz smoke: FAILED: fuzz_$h found an input that breaks the parser (log above; the input is saved as"
    echo "            $build/fuzz_$h-crash-* (or leak-, timeout-, oom-): add it to tests/data/fuzz/ once fixed)"
    failed=1
  fi
  rm -rf "$corpus"
done
exit $failed
