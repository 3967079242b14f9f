#!/usr/bin/env bash
# Prints the path of examples/data/words-by-language.csv, making it first when it is not there:
# 2,000 words each of English, German and French (word,language), for the sequence-classification
# example (examples/jobs/word_language.json: which language is a word from its letters alone?).
#
# The words come from Debian's word lists, as their packages ship them: wamerican
# (/usr/share/dict/american-english), wngerman (/usr/share/dict/ngerman) and wfrench
# (/usr/share/dict/french). The packages are downloaded and unpacked here, not installed; installed
# ones are read as they are. Nothing downloads at run time: the example reads the CSV this prints.
# Each list is lowercased and kept to alphabetic words of 3 to 16 letters; a word in two lists is
# dropped; 2,000 are drawn per language with a fixed seed (scripts/wordlists.py).
#
# Usage: scripts/wordlists.sh [DIR]      DIR: where the CSV goes (default examples/data)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

dest_dir=${1:-examples/data}
out="$dest_dir/words-by-language.csv"
declare -A LISTS=([wamerican]=american-english [wngerman]=ngerman [wfrench]=french)

if [ ! -f "$out" ]; then
  mkdir -p "$dest_dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  args=()
  for package in wamerican wngerman wfrench; do
    src="/usr/share/dict/${LISTS[$package]}"
    if [ ! -f "$src" ]; then
      say "downloading Debian's $package (a word list)" >&2
      if ! (cd "$tmp" && apt-get download -q "$package") >/dev/null 2>"$tmp/apt.err"; then
        if [ "$(id -u)" = 0 ]; then apt_get update >&2 && (cd "$tmp" && apt-get download -q "$package") >/dev/null
        else cat "$tmp/apt.err" >&2; exit 1; fi
      fi
      dpkg-deb -x "$tmp/${package}"_*.deb "$tmp/root"
      src="$tmp/root$src"
    fi
    args+=("$src")
  done
  python3 scripts/wordlists.py "${args[@]}" >"$tmp/words.csv"
  mv "$tmp/words.csv" "$out"
fi
realpath "$out"
