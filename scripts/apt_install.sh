#!/usr/bin/env bash
# Installs Debian packages, waiting for the package lock when another apt or dpkg is running.
# Usage (as root): scripts/apt_install.sh PKG...
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "scripts/apt_install.sh: installing Debian packages needs root" >&2; exit 1; }
apt_install "$@"
