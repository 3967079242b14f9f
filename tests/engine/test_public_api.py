"""Names the service imports from the engine: format_shape, TASKS, the optimizer specs."""
from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

import engine
from engine.spec import Adam, AdamW, OptimizerSpec


@pytest.mark.parametrize("shape, batch, text", [
    ((3, 28, 28), True, "(N, 3, 28, 28)"),
    ((3, 28, 28), False, "(3, 28, 28)"),
    ((10,), True, "(N, 10)"),
    ((10,), False, "(10,)"),
    ((), True, "(N,)"),
    ((), False, "()"),
])
def test_format_shape(shape, batch, text):
    assert engine.format_shape(shape, batch=batch) == text


def test_format_shape_takes_a_torch_size_and_defaults_to_the_batch_form():
    import torch
    assert engine.format_shape(torch.zeros(2, 5).shape[1:]) == "(N, 5)"
    assert engine.format_shape(torch.zeros(2, 5).shape, batch=False) == "(2, 5)"


def test_engine_messages_use_it():
    with pytest.raises(engine.SpecError, match=r"\(N, 3, 4\)"):
        engine.plan({"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 1}]}, (3, 4))


def test_tasks_is_the_one_definition():
    from engine.data import TASKS
    assert engine.TASKS is TASKS == ("classification", "regression")
    with pytest.raises(ValueError, match="task must be one of"):
        engine.check_compatible("mse", "clustering", None, (1,))


def test_adamw_spec_is_adam_spec_with_decoupled_decay_default():
    adapter = TypeAdapter(OptimizerSpec)
    adamw, adam = adapter.validate_python("adamw"), adapter.validate_python("adam")
    assert type(adamw) is AdamW and isinstance(adamw, Adam) and type(adam) is Adam
    assert (adamw.weight_decay, adam.weight_decay) == (1e-2, 0.0)
    assert adamw.model_dump() == {**adam.model_dump(), "type": "adamw", "weight_decay": 1e-2}
    assert adapter.validate_python({"type": "adamw", "betas": [0.8, 0.9]}).betas == (0.8, 0.9)
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "adamw", "momentum": 0.9})   # extra fields stay forbidden
    with pytest.raises(ValidationError):
        AdamW(type="adam")                                            # the literal is its own
