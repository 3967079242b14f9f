#!/usr/bin/env bash
# Installs torch into the environment of the Python given (default: .venv/bin/python), unless it
# has one already (a CUDA build stays). Without an NVIDIA GPU it asks PyTorch's CPU index first
# (no CUDA libraries: a few hundred MB instead of several GB), with a short timeout and no retries,
# then falls back to the default index; with a GPU, the default index's CUDA build.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PY=${1:-.venv/bin/python}
VERSION=${TORCH_VERSION:-2.13.0}
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
pip() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if have=$("$PY" -c 'import torch; print(torch.__version__, "CUDA " + torch.version.cuda if torch.version.cuda else "CPU")' 2>/dev/null); then
  say "torch is already installed ($have); keeping it"
  exit 0
fi
if { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; } \
   || ls /proc/driver/nvidia/gpus/* >/dev/null 2>&1; then
  say "an NVIDIA GPU is present: installing torch $VERSION (CUDA build) from the default index"
  pip "torch==$VERSION"
  exit 0
fi
say "no NVIDIA GPU: installing the CPU build of torch $VERSION from $CPU_INDEX"
if ! pip --index-url "$CPU_INDEX" --timeout 15 --retries 0 "torch==$VERSION"; then
  say "PyTorch's CPU index did not serve it; installing torch $VERSION from the default index"
  pip "torch==$VERSION"
fi
