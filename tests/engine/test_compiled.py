"""Model.from_spec(compile=True): the norms' formulas through torch.compile give the eager formulas'
numbers, and a formula that cannot be compiled runs eagerly (engine.layers.compiled)."""
from __future__ import annotations

import warnings

import torch

from engine import Model
from engine.layers import compiled as compiled_module

F64 = torch.float64
# every compiled formula (batchnorm's forward and backward, layernorm's) once, at one shape: one compile
# each, seconds each
SPEC = {"layers": [{"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}, {"type": "batchnorm"},
                   {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out_features": 6},
                   {"type": "layernorm"}, {"type": "linear", "out_features": 2}]}


def test_compiled_formulas_equal_the_eager_ones():
    g = torch.Generator().manual_seed(4)
    models = [Model.from_spec(SPEC, (2, 5, 5), seed=3, dtype=F64, compile=flag) for flag in (False, True)]
    for _ in range(2):                                       # running stats carried into the second step
        x = torch.randn(6, 2, 5, 5, generator=g, dtype=F64) * 2 + 1
        dout = torch.randn(6, 2, generator=g, dtype=F64)
        with torch.inference_mode():
            results = [(m.forward(x), m.backward(dout), m.flat_grads.clone()) for m in models]
        for eager, fused in zip(*results):
            assert (eager - fused).abs().max().item() <= 1e-12 * (1 + eager.abs().max().item())
    for k, v in models[0].buffers().items():
        assert (v.double() - models[1].buffers()[k].double()).abs().max().item() <= 1e-12, k


def test_a_formula_that_does_not_compile_runs_eagerly_with_one_warning(monkeypatch):
    def no_compiler(fn):
        def fails(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return fails
    monkeypatch.setattr(compiled_module.torch, "compile", no_compiler)

    def formula(a, b):
        return a * b + 1
    fn = compiled_module._Compiled(formula)
    a, b = torch.tensor([2.0]), torch.tensor([3.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fn(a, b).item() == 7.0 and fn(a, b).item() == 7.0
    assert len(caught) == 1 and "formula could not be compiled" in str(caught[0].message)
    assert "no working C++ compiler" in str(caught[0].message)
