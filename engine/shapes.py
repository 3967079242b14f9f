"""Shapes, and the one way the engine (and the API) writes them in messages."""
from __future__ import annotations

from typing import Iterable

Shape = tuple[int, ...]   # a shape without the batch dimension, as layers and specs see it


def format_shape(shape: Iterable[int], batch: bool = True) -> str:
    """A shape as text: (3, 28, 28) -> "(N, 3, 28, 28)" with the batch dim, "(3, 28, 28)" without.

    One dim keeps Python's trailing comma: () -> "(N,)", (5,) -> "(5,)" when batch=False.
    """
    dims = (["N"] if batch else []) + [str(int(d)) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
