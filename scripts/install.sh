#!/usr/bin/env bash
# Installs chainrule and what it needs into the current Python. Usage: scripts/install.sh [test]
# torch is installed first as the pinned CPU build where none is present: an unpinned torch
# would pull several GB of CUDA packages. A machine with a CUDA torch keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
fi
if [ "${1:-}" = "test" ]; then
  "$PY" -m pip install -q -e ".[test]"
else
  "$PY" -m pip install -q -e .
fi
