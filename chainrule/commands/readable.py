"""API records as lines a person reads: `name  value` pairs aligned, nested values summarised on one
line (`adam(lr=0.01, betas=(0.9, 0.999))`, `25 values from -0.5 to 1.5`), never a Python repr.

Generic on purpose: a field the API adds tomorrow is shown by the same rules, not dropped."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from rich.markup import escape

from .common import cell, console, on_terminal

INLINE_ITEMS = 8        # a list longer than this is summarised (count, range), not spelled out
Pair = tuple[str, str]


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return cell(value)


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def numbers(values: Sequence[Any]) -> list[float]:
    """The finite-or-not numbers of a nested list, flattened (None skipped)."""
    out: list[float] = []
    for v in values:
        if isinstance(v, (list, tuple)):
            out += numbers(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
    return out


def shape(values: Sequence[Any]) -> str:
    dims = [len(values)]
    while values and isinstance(values[0], (list, tuple)):
        values = values[0]
        dims.append(len(values))
    return "×".join(str(d) for d in dims)


def listing(values: Sequence[Any], depth: int = 0) -> str:
    """A list on one line: short ones spelled out, long or nested numeric ones as count and range."""
    nested = any(isinstance(v, (list, tuple)) for v in values)
    if not nested and len(values) <= INLINE_ITEMS:
        return ", ".join(inline(v, depth + 1) for v in values) or "-"
    found = numbers(values)
    if found and all(is_scalar(v) or isinstance(v, (list, tuple)) for v in values):
        ordered = not nested and found == sorted(found)
        span = f"from {cell(found[0])} to {cell(found[-1])}" if ordered else \
            f"min {cell(min(found))}, max {cell(max(found))}"
        return f"{shape(values)} values, {span}"
    return f"{len(values)} items"


def inline(value: Any, depth: int = 0) -> str:
    """Any JSON value on one line; nesting deeper than a level is counted, not spelled out."""
    if isinstance(value, dict):
        if depth >= 2 or (depth and value and all(isinstance(v, dict) for v in value.values())):
            return f"({len(value)} entries)"
        if "type" in value and isinstance(value["type"], str):
            return call(value, depth)
        parts = [f"{k} {inline(v, depth + 1)}" for k, v in value.items() if v is not None]
        return ", ".join(parts) if depth == 0 else f"({', '.join(parts)})"
    if isinstance(value, (list, tuple)):
        return listing(value, depth)
    return scalar(value)


def call(spec: dict[str, Any], depth: int = 0) -> str:
    """`{"type": "adam", "lr": 0.01}` as `adam(lr=0.01)`; null fields left out."""
    args = [f"{k}={_arg(v, depth)}" for k, v in spec.items() if k != "type" and v is not None]
    return f"{spec['type']}({', '.join(args)})" if args else spec["type"]


def _arg(value: Any, depth: int) -> str:
    if isinstance(value, (list, tuple)) and len(value) <= INLINE_ITEMS and all(map(is_scalar, value)):
        return f"({', '.join(scalar(v) for v in value)})"
    return inline(value, depth + 1)


def flatten(record: dict[str, Any], prefix: str = "") -> list[Pair]:
    """Nested dicts as dotted names (`hessian.min_eigenvalue`), each leaf on its own line."""
    out: list[Pair] = []
    for name, value in record.items():
        if isinstance(value, dict) and value and not ("type" in value and isinstance(value["type"], str)):
            out += flatten(value, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", inline(value)))
    return out


def print_pairs(pairs: Iterable[Pair], indent: int = 0) -> None:
    """Aligned `name  value` lines; the value is never wrapped."""
    pairs = list(pairs)
    if not pairs:
        return
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        line = f"{' ' * indent}{name:<{width}}  {value}"
        if on_terminal():
            line = f"{' ' * indent}[bold]{escape(name):<{width}}[/]  {escape(value)}"
        console.print(line, highlight=False, soft_wrap=True, markup=on_terminal())


def heading(text: str) -> None:
    console.print(f"[bold]{escape(text)}[/]" if on_terminal() else text, highlight=False, soft_wrap=True,
                  markup=on_terminal())
