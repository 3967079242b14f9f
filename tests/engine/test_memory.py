"""engine.memory: the bytes a training step and an inference need, counted from the Plan by hand."""
from __future__ import annotations

import pytest
import torch

from bench.cases import CASES
from bench.memory_use import measure
from bench.sides import batches, cycle, engine_step_fn
from engine import Model, plan
from engine.memory import estimate
from engine.spec import SGD, Adam


def test_a_small_mlp_counted_by_hand():
    p = plan({"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                         {"type": "linear", "out_features": 3}]}, (4,))
    e = estimate(p, 4, Adam(type="adam"))
    # per sample, float32: the input batch 4x4; kept: linear 8x4 (the relu's output, which the next linear
    # keeps too: the first linear's own is freed once the relu has read it), linear 3x4;
    # backward's widest moment: the relu's dy and dx, (8 + 8) x 4; the loss: 3 x 3 x 4
    assert e.activation_bytes == 16 + (32 + 12) + 64 + 36
    assert e.inference_bytes == 16 + (32 + 12) + 32
    # 67 parameters x 4 bytes x (parameter, gradient, Adam's two moments, checkpoint and best copies)
    assert e.parameter_bytes == 67 * 4 * 6
    assert estimate(p, 8, SGD(type="sgd")).parameter_bytes == 67 * 8 * 4   # float64, no momentum
    assert e.training_bytes(10) == 10 * e.activation_bytes + e.parameter_bytes
    assert e.max_batch_size(e.training_bytes(10)) == 10 and e.max_batch_size(e.parameter_bytes - 1) == 0


def test_what_each_layer_keeps():
    def kept(layers, shape=(16,)):
        return estimate(plan({"layers": layers}, shape), 4).inference_bytes
    base = kept([{"type": "linear", "out_features": 10}])
    # a relu after a shared input (not a linear's sole reader) keeps its own output
    assert kept([{"type": "relu"}, {"type": "linear", "out_features": 10}]) - base == 16 * 4 + (16 - 10) * 4
    # dropout keeps its mask beside its output; flatten is a view (the widest output, 16, still counts once)
    assert kept([{"type": "dropout", "p": 0.5}, {"type": "linear", "out_features": 10}]) - base == 2 * 16 * 4 + 6 * 4
    assert kept([{"type": "flatten"}, {"type": "linear", "out_features": 10}]) - base == 6 * 4


def test_a_conv_counts_its_unfolded_input_in_the_backward():
    p = plan({"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1}]}, (3, 8, 8))
    e = estimate(p, 4)
    unfolded = 3 * 3 * 3 * 8 * 8
    assert e.activation_bytes == (3 * 64) * 4 + (2 * 64) * 4 + (2 * 64 + 3 * 64 + unfolded) * 4 + 3 * 2 * 64 * 4


@pytest.mark.parametrize("name", ["small CNN", "BN CNN", "LN MLP", "ResNet DAG", "wide MLP"])
def test_the_estimate_bounds_what_a_training_step_allocates(name):
    # a step of the benchmark's networks (batchnorm, layernorm + GELU, leaky relu, a residual DAG), its
    # allocations counted by torch's profiler: at most the estimate, and not far below it
    case = next(c for c in CASES if c.name == name)
    dev, batch = torch.device("cpu"), 8
    data = batches(case, dev, torch.float32, batch, 2, 0)
    step = measure(lambda: cycle(engine_step_fn(Model.from_spec({"layers": case.layers}, case.input_shape)), data),
                   False, dev)
    held = step.peak - step.persistent                     # activations and temporaries, at their most
    e = estimate(plan({"layers": case.layers}, case.input_shape), 4, Adam(type="adam"))
    assert step.persistent <= e.parameter_bytes
    assert held <= batch * e.activation_bytes <= 3 * held


def test_the_estimate_bounds_a_gpt_step_and_counts_attention_in_t_squared():
    """A GPT's step, counted by torch's profiler, within the estimate; the heads' T x T weights show."""
    from bench.memory_use import measure as measure_step
    from engine import losses, optim
    from engine.train import TrainStep
    from sequence_support import gpt
    spec, batch, context = gpt(vocab=50, dim=32, context=32, blocks=2, heads=4), 8, 32
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 50, (batch, context), generator=g), torch.randint(0, 50, (batch, context), generator=g)

    def make():
        model = Model.from_spec(spec, (context,))
        step = TrainStep(model, losses.make("cross_entropy"), optim.make("adam", model.parameters()))
        return lambda: step(x, y)
    used = measure_step(make, False, torch.device("cpu"))
    held = used.peak - used.persistent
    e = estimate(plan(spec, (context,)), 4, Adam(type="adam"))
    assert used.persistent <= e.parameter_bytes
    assert held <= batch * e.activation_bytes <= 3 * held
    longer = estimate(plan(gpt(vocab=50, dim=32, context=64, blocks=2, heads=4), (64,)), 4)
    # doubling T doubles what is linear in T and quadruples the heads' T x T weights (two blocks, 4 heads,
    # kept P and the backward's dP, dS)
    assert longer.activation_bytes - 2 * e.activation_bytes >= 2 * 4 * (64 * 64 - 2 * 32 * 32) * 4
