"""scripts/corpus.sh: the examples' public-domain English text comes from a Debian package, unpacked
once, and is a text a language_model dataset takes as it is."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from api.ingest import parse_text

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (shutil.which("apt-get") and shutil.which("dpkg-deb")),
                                reason="the corpus comes from a Debian package: needs apt-get and dpkg-deb")


def corpus(dest: Path) -> Path:
    run = subprocess.run(["bash", str(ROOT / "scripts" / "corpus.sh"), str(dest)], check=False,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip())


def test_corpus_is_public_domain_english_of_the_promised_size(tmp_path):
    path = corpus(tmp_path / "data")
    assert path == (tmp_path / "data" / "devils-dictionary.txt").resolve() and path.is_file()
    data = path.read_bytes()
    assert len(data) == 383_656                         # > 100 KB of English
    text = data.decode("utf-8")                         # valid UTF-8 (it is ASCII)
    assert "THE DEVIL'S DICTIONARY" in text and "A Public Domain Text, Copyright Expired" in text
    assert "ABNORMAL, adj.  Not conforming to standard." in text
    mtime = path.stat().st_mtime_ns
    assert corpus(tmp_path / "data") == path and path.stat().st_mtime_ns == mtime   # made once


def test_corpus_is_a_language_model_dataset(tmp_path):
    parsed = parse_text(corpus(tmp_path), tokenizer="char")
    assert parsed.n_rows == 383_656 and parsed.task == "language_model"
    assert parsed.vocab_size == 85                 # printable ASCII and the newline, less a few symbols
