#!/usr/bin/env bash
# Creates tools/.venv with the real Hugging Face stack (CPU torch, transformers, tokenizers, safetensors, peft,
# numpy) used by tools/make_goldens.py to write the committed golden data in tests/data/golden/.
# Idempotent: a finished venv has tools/.venv/READY and is left alone (pass --force to rebuild it).
# `make test` never needs this: everything the generator writes is committed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
cpu_index="https://download.pytorch.org/whl/cpu"

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$venv"
fi
if [[ -f "$venv/READY" ]]; then
  echo "setup-venv: $venv is ready (pass --force to rebuild)"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --upgrade pip

# CPU-only torch from the PyTorch index when it answers, else PyPI (whose Linux wheel also pulls CUDA libraries).
if curl -fsS -m 15 -o /dev/null "$cpu_index/torch/" 2>/dev/null; then
  echo "setup-venv: torch from $cpu_index"
  "${pip[@]}" install --index-url "$cpu_index" torch
else
  echo "setup-venv: $cpu_index not reachable; torch from PyPI"
  "${pip[@]}" install torch
fi
"${pip[@]}" install transformers tokenizers safetensors peft numpy

"$venv/bin/python" -c "import torch, transformers, tokenizers, safetensors, peft, numpy; \
print('setup-venv: torch', torch.__version__, 'transformers', transformers.__version__)"
touch "$venv/READY"
echo "setup-venv: done, $venv/READY"
