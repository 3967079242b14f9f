"""Our formulas through torch.compile: the same mathematics, in the loops Inductor generates.

A formula written as whole-tensor ops makes one pass over memory per op, and on the CPU a
small tensor's op costs as much in dispatch as in arithmetic; Inductor fuses a formula's
elementwise ops and reductions into a few loops. A model built with compile=True runs the
formulas its layers name (`Layer.formula`) through `compiled`; the eager function stays the
formula, and tests/engine check that both give the same numbers.

Cold start: the first call of each formula on a new input shape compiles it (seconds; the
benchmark prints the first step's time), and the second shape recompiles it once with symbolic
sizes. Where compiling fails (no C++ compiler, an unsupported op) the formula runs eagerly, with
one warning.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch


class _Compiled:
    """fn through torch.compile, falling back to fn for good on the first failure to compile."""

    def __init__(self, fn: Callable):
        self.fn, self.failed = fn, False
        self.compiled = torch.compile(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as e:       # torch's compile errors have no common base class
                self.failed = True
                warnings.warn(f"{self.fn.__name__} could not be compiled ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); running it eagerly", RuntimeWarning,
                              stacklevel=2)
        return self.fn(*args)


@functools.cache
def compiled(fn: Callable) -> Callable:
    """fn through torch.compile: one compiled function per formula, shared by every layer that runs it."""
    return _Compiled(fn)
