"""DESIGN.md's rules for engine/, checked on its source: no autograd or torch.nn.Module on the
training path, no private torch API, no positional aten calls."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"
SOURCES = sorted(ENGINE.rglob("*.py"))


def code_lines(path: Path):
    """(line number, the line's code without strings and comments), for lines that have code."""
    lines: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER):
            lines.setdefault(tok.start[0], []).append(tok.string)
    for number, toks in sorted(lines.items()):
        yield number, " ".join(toks).replace(" . ", ".").replace(" (", "(")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_private_torch_api(path):
    private = re.compile(r"torch\._|\._base\b|\._C\b|torch\.ops\b|\baten\.")
    found = [f"{n}: {c.strip()}" for n, c in code_lines(path) if private.search(c)]
    assert not found, f"{path.name} uses private torch API: {found}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ENGINE)))
def test_no_autograd_or_modules_on_the_training_path(path):
    banned = re.compile(r"requires_grad|torch\.autograd|\bnn\.Module|torch\.optim\b"
                        r"|^(from torch import nn|import torch\.nn as nn|from torch\.nn import)")
    found = [f"{n}: {c.strip()}" for n, c in code_lines(path) if banned.search(c)]
    assert not found, f"{path.name}: {found}"


def test_the_rules_see_every_module():
    names = {str(p.relative_to(ENGINE)) for p in SOURCES}
    assert {"model.py", "losses.py", "optim/base.py", "optim/rules.py", "layers/conv.py", "layers/pool.py",
            "layers/relu.py", "train/step.py"} <= names
