#!/usr/bin/env bash
# Prints the path of a public-domain English text for the examples and benchmarks (a language
# model's training text), making it first when it is not there yet.
#
# The text: Ambrose Bierce, "The Devil's Dictionary" (1881-1906; public domain, its copyright
# expired: Debian's copyright file for the package says so), as Debian's package dict-devil ships
# it in /usr/share/dictd/devil.dict.dz (dictzip, which gzip reads). Unpacked, it is 383,656 bytes of
# ASCII prose and verse, byte for byte the package's (a few dictfmt header lines lead it).
# The package is downloaded and unpacked here, not installed: installing it would also install
# and start dictd, the dictionary server it depends on. An installed dict-devil is used as it is.
# Nothing downloads at run time: the examples read the file this prints.
#
# Usage: scripts/corpus.sh [DIR]      DIR: where the text goes (default examples/data)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PACKAGE=dict-devil
MEMBER=usr/share/dictd/devil.dict.dz
SHA256=703d1225d2fb927653bfd8b00e4e96938e0b630c6023edd26702ac6ed50383f8   # of the unpacked text
dest_dir=${1:-examples/data}
out="$dest_dir/devils-dictionary.txt"

fetch_deb() {   # fetch_deb DIR: the package's .deb into DIR (apt-get download needs no root)
  if (cd "$1" && apt-get download -q "$PACKAGE") >/dev/null 2>"$1/apt.err"; then return 0; fi
  if [ "$(id -u)" = 0 ]; then
    say "the package lists do not have $PACKAGE; refreshing them (apt-get update)" >&2
    apt_get update >&2 && (cd "$1" && apt-get download -q "$PACKAGE") >/dev/null 2>"$1/apt.err" && return 0
  fi
  cat "$1/apt.err" >&2
  echo "scripts/corpus.sh: could not download Debian's $PACKAGE (as root it runs apt-get update first)" >&2
  return 1
}

if [ ! -f "$out" ] || ! echo "$SHA256  $out" | sha256sum --check --status; then
  mkdir -p "$dest_dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  src="/$MEMBER"
  if [ ! -f "$src" ]; then
    say "downloading Debian's $PACKAGE (The Devil's Dictionary, public domain)" >&2
    fetch_deb "$tmp"
    dpkg-deb -x "$tmp/${PACKAGE}"_*.deb "$tmp/root"
    src="$tmp/root/$MEMBER"
  fi
  gzip -dc "$src" >"$tmp/text"
  if ! echo "$SHA256  $tmp/text" | sha256sum --check --status; then
    echo "scripts/corpus.sh: $src unpacks to a text other than the one the examples were measured on" \
         "(sha256 $(sha256sum "$tmp/text" | cut -d' ' -f1), expected $SHA256)" >&2
    exit 1
  fi
  mv "$tmp/text" "$out"
fi
realpath "$out"
