# Shared by the scripts: `say` prints a step; `apt_get` is apt-get that waits for another apt or
# dpkg to finish (its lock) instead of failing, and shows apt's own message when it fails.
say() { printf '==> %s\n' "$*"; }

apt_get() {
  local waited=0 limit=${APT_LOCK_WAIT_S:-600} out
  while :; do
    if out=$(DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=60 "$@" 2>&1); then
      return 0
    fi
    if grep -qiE 'could not get lock|unable to acquire the dpkg frontend lock|unable to lock' <<<"$out" \
       && [ "$waited" -lt "$limit" ]; then
      say "another apt or dpkg is running (it holds the package lock); waiting for it (${waited}s of ${limit}s)"
      sleep 5; waited=$((waited + 5)); continue
    fi
    printf '%s\n' "$out" | tail -n 20 >&2
    return 1
  done
}

# apt_install PKG...: install Debian packages (root only); refreshes the package lists only when
# the install needs them, so an up-to-date machine is not sent to the network
apt_install() {
  say "installing Debian packages: $*"
  apt_get install -y --no-install-recommends "$@" && return 0
  say "refreshing the package lists (apt-get update), then trying again"
  apt_get update && apt_get install -y --no-install-recommends "$@"
}
