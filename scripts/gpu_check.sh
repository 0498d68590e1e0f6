#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a machine without network (the borrowed H200).
#
#   scripts/gpu_check.sh [gpu_check.py options]        e.g. --out runs/gpu-check
#
# 1. Carried wheels in $GPU_CHECK_WHEELS (default .whl/, git-ignored) are installed
#    with --no-deps --no-index into a private folder, never into the system Python:
#    the machine already has torch, transformers, peft, accelerate, typer and rich.
#    Of the project's other dependencies the check needs only jsonlines (records.py
#    imports it), plus bitsandbytes for its QLoRA part; math-verify, gguf and
#    reasoning-gym are never imported.
# 2. The project goes on PYTHONPATH (no install), and the check runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
paths="$PWD"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    paths="$paths:$SITE"
fi
export PYTHONPATH="$paths${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
"$PY" -c "import jsonlines" 2>/dev/null || {
    echo "error: jsonlines does not import; put its wheel in $WHEELS/ (see benchmarks/gpu_check.py)" >&2
    exit 2
}
exec "$PY" benchmarks/gpu_check.py "$@"
