#!/usr/bin/env bash
# Installs chainrule and starts it in the embedded default: SQLite, a server-less broker and a
# worker process, all under CHAINRULE_DATA_DIR (default ./.chainrule). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec chainrule serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
