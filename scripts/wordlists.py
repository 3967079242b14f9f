"""The CSV of scripts/wordlists.sh: word,language from three word lists (English, German, French).

Usage: python3 scripts/wordlists.py ENGLISH GERMAN FRENCH > words.csv    (standard library only)
"""
from __future__ import annotations

import csv
import random
import sys

PER_LANGUAGE = 2000
LANGUAGES = ("english", "german", "french")


def words(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {w for w in (line.strip().lower() for line in f) if w.isalpha() and 3 <= len(w) <= 16}


def main(paths: list[str]) -> None:
    if len(paths) != len(LANGUAGES):
        sys.exit(f"usage: wordlists.py {' '.join(l.upper() for l in LANGUAGES)}")
    lists = [words(p) for p in paths]
    rows = []
    for i, (language, ws) in enumerate(zip(LANGUAGES, lists)):
        others = set().union(*(w for j, w in enumerate(lists) if j != i))
        own = sorted(ws - others)                       # a word in two lists says nothing of either
        rows += [(w, language) for w in random.Random(i).sample(own, PER_LANGUAGE)]
    random.Random(len(LANGUAGES)).shuffle(rows)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["word", "language"])
    out.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
