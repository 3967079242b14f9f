#!/usr/bin/env bash
# Installs chainrule with its test dependencies into .venv and runs every test there: the engine's
# proofs against PyTorch, the API, end-to-end runs on SQLite + the embedded broker and on
# PostgreSQL + Redis (started by the tests on 127.0.0.1 from Debian's packages), and the dashboard
# in Debian's Chromium (driven by Playwright; never `playwright install`, which downloads a browser).
# The packages are installed here when missing and we are root; without them those tests skip
# locally and fail in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
# fonts-dejavu-core: without any font, Chromium's text (and the screenshots) would be boxes
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt_install "${missing[@]}"
  # Debian starts the packaged servers; the tests start their own on free loopback ports
  say "stopping the packaged PostgreSQL and Redis services (the tests start their own)"
  service postgresql stop >/dev/null 2>&1 || true; service redis-server stop >/dev/null 2>&1 || true
fi
bash scripts/install.sh test
# One pytest worker a core (pytest-xdist), handed tests as they free up (worksteal): most of the
# suite's time is real processes starting and training, CPU-bound, so more workers than cores only
# queue them. CHAINRULE_TEST_WORKERS=0 runs everything in this one process.
workers=${CHAINRULE_TEST_WORKERS:-auto}
say "running the tests in .venv ($workers workers)"
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"   # the `chainrule` the tests run is the .venv's
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "$workers" --dist worksteal "$@"
