#!/usr/bin/env bash
# GPU check (docs/training.md, "GPU check"): LoRA/QLoRA tokens/s and MFU on a ~1.1B Llama built from a config, then
# serving parity of the merged model. Needs a CUDA machine with the repo's venv; no hub access. Fits 10 minutes:
# model build ~1 min, 30 steps each of LoRA and QLoRA ~2-3 min, serve start and one answer ~1-2 min.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec timeout 540 "$PY" benchmarks/gpu_check.py "$@"
