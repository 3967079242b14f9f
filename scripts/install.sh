#!/usr/bin/env bash
# Installs chainrule into a virtual environment in the repository, .venv (made when missing, so a
# system Python that is "externally managed", PEP 668, is never installed into), and writes
# .venv/chainrule.env so that every `chainrule` from this environment, run from any directory,
# keeps its data in the repository's .chainrule. Writes nothing outside the repository except
# Debian packages (as root, when the venv module is missing). Usage: scripts/install.sh [test]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
REPO=$PWD
VENV=$REPO/.venv
PY=${PYTHON:-python3}
EXTRA=${1:-}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "chainrule needs Python 3.11 or newer; $PY is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment $VENV (with $("$PY" --version 2>&1))"
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt_install python3-venv
      "$PY" -m venv "$VENV"
    else
      echo "$PY cannot create a virtual environment (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
bash scripts/install_torch.sh "$VENV/bin/python"

# pip runs only when pyproject.toml (or the extra) changed since the last install: a second
# `serve.sh` starts at once, and offline
stamp="$VENV/.chainrule-installed"         # "<pyproject hash> <extra>" of the last install
hash=$(sha256sum pyproject.toml | cut -c1-16)
{ read -r have_hash have_extra < "$stamp"; } 2>/dev/null || true
if [ "${have_hash:-}" = "$hash" ] && { [ -z "$EXTRA" ] || [ "${have_extra:-}" = "$EXTRA" ]; }; then
  say "chainrule is installed in $VENV and up to date"
else
  say "installing chainrule ${EXTRA:+with its $EXTRA dependencies }into $VENV (pip install -e)"
  "$VENV/bin/python" -m pip install -q -e ".${EXTRA:+[$EXTRA]}"
  echo "$hash $EXTRA" > "$stamp"
fi
printf 'CHAINRULE_DATA_DIR=%s\n' "$REPO/.chainrule" > "$VENV/chainrule.env"
say "data directory: $REPO/.chainrule (kept in $VENV/chainrule.env; CHAINRULE_DATA_DIR overrides it)"
