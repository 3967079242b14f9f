"""The README links every document under docs/, and every link it makes into the repository resolves."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
LINKS = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)      # [text](target) and ![alt](target)


def test_every_doc_under_docs_is_linked_from_the_readme():
    docs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
    assert docs and [d for d in docs if d not in LINKS] == []


def test_every_link_into_the_repository_resolves():
    local = [link for link in LINKS if not re.match(r"[a-z]+:", link)]
    assert local and [link for link in local if not (ROOT / link).exists()] == []
