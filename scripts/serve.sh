#!/usr/bin/env bash
# Installs chainrule into .venv and starts it in the embedded default: SQLite, a server-less broker
# and a worker process, with the data in the repository's .chainrule (CHAINRULE_DATA_DIR
# overrides it). It stays in the foreground; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
bash scripts/install.sh
DATA_DIR=${CHAINRULE_DATA_DIR:-$PWD/.chainrule}
HOST=${HOST:-127.0.0.1} PORT=${PORT:-8000}
say "starting chainrule on http://$HOST:$PORT (Swagger UI: /docs); data in $DATA_DIR"
say "it stays in the foreground: Ctrl-C stops it. In another terminal: source $PWD/.venv/bin/activate"
exec "$PWD/.venv/bin/chainrule" serve --host "$HOST" --port "$PORT"
