#!/usr/bin/env bash
# The GPU checks, on a machine with a CUDA device: the tests of tests/gpu/ (bf16 and fp32 training steps on CUDA,
# decoding that agrees with the CPU's), then the benchmark model's training and decoding speed on the GPU.
#   bash scripts/gpu_check.sh            (after `make install`, or with s2s-attn and pytest installed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
"$PY" -m pytest -q tests/gpu
"$PY" scripts/benchmark.py --steps 200 --decode 2000 --configs \
    "bahdanau_bf16=experiment=benchmark trainer.device=cuda trainer.precision=bf16 trainer.threads=null" \
    "bahdanau_fp32=experiment=benchmark trainer.device=cuda trainer.precision=fp32 trainer.threads=null"
