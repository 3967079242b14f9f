"""The engine's speed shortcuts give the same numbers as the plain path, in float64.

Each shortcut sits beside its plain form as a named function or flag; the benchmark's
--tricks section (bench/engine_tricks.py) has the figure that keeps it. Here:
- Model.backward(dout, need_input_grad=False) skips the input gradient: every parameter
  gradient must still be bit-identical to the full backward's, and a conv reading the input
  never computes dx.
- Cross-entropy's log-softmax: log_softmax_kernel (torch's fused kernel) and log_softmax (the
  formula, for more than 64 rows of fewer than 16 classes on the CPU) agree to rounding, and
  both match torch.
- Adam's denominator, divided in place on the step's one temporary, stays bit-identical to
  torch.optim's single-tensor update.
- TrainStep under torch.inference_mode or torch.no_grad: the same steps, and every buffer
  that outlives a step stays writable outside inference mode.
- Max pooling over 8+ channels goes through max_pool_channels_last: values, winners (ties
  included) and gradients equal max_pool's.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine import Model, losses, optim

DT = torch.float64

NETS = {
    "mlp": ({"layers": [{"type": "linear", "out_features": 7}, {"type": "relu"},
                        {"type": "linear", "out_features": 3}]}, (5,)),
    "flatten_first": ({"layers": [{"type": "flatten"}, {"type": "linear", "out_features": 4}, {"type": "tanh"},
                                  {"type": "linear", "out_features": 2}]}, (2, 3)),
    "cnn": ({"layers": [{"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
                        {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
                        {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                        {"type": "flatten"}, {"type": "linear", "out_features": 2}]}, (2, 6, 6)),
    "residual_dag": ({"layers": [
        {"type": "linear", "out_features": 6, "name": "a", "inputs": ["input"]},
        {"type": "relu", "name": "r", "inputs": ["a"]},
        {"type": "linear", "out_features": 6, "name": "b", "inputs": ["r"]},
        {"type": "add", "name": "s", "inputs": ["b", "a"]},
        {"type": "concat", "name": "c", "inputs": ["s", "input"]},
        {"type": "linear", "out_features": 2, "name": "out", "inputs": ["c"]}]}, (6,)),
    "input_into_merge": ({"layers": [
        {"type": "relu", "name": "pre", "inputs": ["input"]},
        {"type": "linear", "out_features": 4, "name": "a", "inputs": ["pre"]},
        {"type": "add", "name": "s", "inputs": ["a", "input"]},
        {"type": "linear", "out_features": 2, "name": "out", "inputs": ["s"]}]}, (4,)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_training_backward_skips_input_grad_with_identical_grads(name):
    spec, shape = NETS[name]
    model = Model.from_spec(spec, shape, seed=1, dtype=DT)
    g = torch.Generator().manual_seed(2)
    x = torch.randn((4, *shape), generator=g, dtype=DT)
    dout = torch.randn((4, *model.output_shape), generator=g, dtype=DT)

    model.forward(x)
    dx = model.backward(dout)
    full = model.flat_grads.clone()
    assert dx.shape == x.shape

    model.flat_grads.zero_()
    model.forward(x)
    assert model.backward(dout, need_input_grad=False) is None
    assert torch.equal(model.flat_grads, full)
    first = next(layer for layer in model.layers if layer.params)
    assert first.need_dx is False          # its input gradient was never computed

    model.forward(x)   # the flag is per call: the default still returns dx, bit-identical
    assert torch.equal(model.backward(dout), dx)


def test_a_conv_reading_the_input_never_computes_dx_in_training(monkeypatch):
    import engine.layers.conv as conv
    calls, plain = [], conv.conv2d_input

    def recorded(dy, weight, in_hw, *args, **kw):          # records the shape of the dx it makes
        calls.append(torch.Size([dy.shape[0], weight.shape[1], *in_hw]))
        return plain(dy, weight, in_hw, *args, **kw)
    monkeypatch.setattr(conv, "conv2d_input", recorded)
    spec, shape = NETS["cnn"]
    model = Model.from_spec(spec, shape, dtype=DT)
    x = torch.randn(2, *shape, dtype=DT)
    model.forward(x)
    model.backward(torch.ones(2, *model.output_shape, dtype=DT), need_input_grad=False)
    assert calls == [torch.Size([2, 3, 3, 3])]          # the second conv's dx only
    model.forward(x)
    model.backward(torch.ones(2, *model.output_shape, dtype=DT))
    assert calls[1:] == [torch.Size([2, 3, 3, 3]), x.shape]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("n,c", [(64, 10), (65, 10), (300, 10), (300, 15), (300, 16)])   # both sides of the switch
def test_cross_entropy_large_batches_match_torch(n, c, smoothing):
    from engine.losses import short_rows_on_cpu
    g = torch.Generator().manual_seed(n)
    pred = torch.randn(n, c, generator=g, dtype=DT) * 3
    pred[:4] = -1000.0                                                                  # extreme rows
    pred[0, 0], pred[1, -1], pred[2, :2], pred[3] = 1000.0, 1000.0, 1000.0, 0.0
    assert short_rows_on_cpu(pred) == (n > 64 and c < 16)
    target = torch.randint(0, c, (n,), generator=g)
    z = pred.clone().requires_grad_(True)
    ref = F.cross_entropy(z, target, label_smoothing=smoothing)
    ref.backward()
    loss = losses.make({"type": "cross_entropy", "label_smoothing": smoothing})
    value = loss.forward(pred, target)
    grad = loss.backward()
    assert abs(value.item() - ref.item()) <= 1e-12 * abs(ref.item())
    assert (grad - z.grad).abs().max().item() <= 1e-10 * z.grad.abs().max().item()


@pytest.mark.parametrize("n", [1, 64, 65, 300, 1024])
@pytest.mark.parametrize("c", [2, 10, 1000])
def test_log_softmax_formula_and_kernel_agree(n, c):
    from engine.losses import log_softmax, log_softmax_kernel
    g = torch.Generator().manual_seed(n * c)
    z = torch.randn(n, c, generator=g, dtype=DT) * 8
    z[0] = 1000.0                                     # a row of ties at an extreme
    if n > 1:
        z[1, 0] = -1000.0
    formula, kernel = log_softmax(z), log_softmax_kernel(z)
    assert torch.isfinite(formula).all()
    assert ((formula - kernel).abs() <= 1e-14 * (1 + kernel.abs())).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,cls,kw", [
    ("adam", torch.optim.Adam, {}), ("adamw", torch.optim.AdamW, {"weight_decay": 0.1}),
    ("adam", torch.optim.Adam, {"amsgrad": True, "weight_decay": 0.01})])
@pytest.mark.parametrize("layout", ["flat", "per_parameter"])
def test_adam_is_bit_identical_to_torch_single_tensor(dtype, name, cls, kw, layout):
    g = torch.Generator().manual_seed(3)
    flat = torch.randn(700, generator=g, dtype=dtype)
    params = ({"w": flat[:600].view(20, 30), "b": flat[600:]} if layout == "flat"
              else {"w": flat[:600].view(20, 30).clone(), "b": flat[600:].clone()})
    ref = [p.clone().requires_grad_(True) for p in params.values()]
    ours = optim.make({"type": name, "lr": 1e-2, **kw}, params)
    theirs = cls(ref, lr=1e-2, foreach=False, fused=False, **kw)
    for _ in range(50):
        grads = {k: torch.randn(p.shape, generator=g, dtype=dtype) for k, p in params.items()}
        ours.step(grads)
        for r, v in zip(ref, grads.values()):
            r.grad = v.clone()
        theirs.step()
    for p, r in zip(params.values(), ref):
        assert torch.equal(p, r.detach())


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_train_step_under_inference_mode_or_no_grad_takes_the_same_steps(name):
    from engine.train import TrainStep

    spec, shape = NETS[name]
    steps = []
    for inference_mode in (True, False):
        model = Model.from_spec(spec, shape, seed=8, dtype=DT)
        opt = optim.make({"type": "adam", "lr": 0.01}, model.parameters())
        step = TrainStep(model, losses.make("cross_entropy"), opt, 1.0, inference_mode=inference_mode)
        steps.append((model, step))
    g = torch.Generator().manual_seed(9)
    for _ in range(5):
        x = torch.randn(6, *shape, generator=g, dtype=DT)
        y = torch.randint(0, steps[0][0].output_shape[0], (6,), generator=g)
        values = [step(x, y).item() for _, step in steps]
        assert values[0] == values[1]
    assert torch.equal(steps[0][0].flat_params, steps[1][0].flat_params)


def test_train_step_in_inference_mode_mixes_with_plain_steps():
    from engine.train import TrainStep

    spec, shape = NETS["mlp"]
    model = Model.from_spec(spec, shape, seed=6)
    loss, opt = losses.make("cross_entropy"), optim.make("adam", model.parameters())
    step = TrainStep(model, loss, opt)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(8, *shape, generator=g), torch.randint(0, 3, (8,), generator=g)
    step(x, y)
    with torch.no_grad():                       # the same step by hand, outside inference mode
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step(model.flat_grads)
    with torch.inference_mode():                # non-flat grads: the gather buffer is made in here
        opt.step({k: v.clone() for k, v in model.grads().items()})
    opt.step({k: v.clone() for k, v in model.grads().items()})   # and written out here
    step(x, y)
    assert opt.steps == 5 and math.isfinite(step.value)


@pytest.mark.parametrize("channels", [3, 8, 16])
@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_matches_torch_in_both_layouts(channels, kernel, stride, padding):
    spec = {"layers": [{"type": "relu"}, {"type": "maxpool2d", "kernel_size": kernel, "stride": stride,
                                          "padding": padding}]}
    model = Model.from_spec(spec, (channels, 9, 10), dtype=DT)
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(3, channels, 9, 10, generator=g, dtype=DT)
    x[:, :, :4] = 0.0                                   # whole windows of tied zeros
    ref_x = x.clone().requires_grad_(True)
    ref = F.max_pool2d(F.relu(ref_x), kernel, stride, padding)
    y = model.forward(x)
    assert y.is_contiguous() and torch.equal(y, ref.detach())
    dy = torch.randn(ref.shape, generator=g, dtype=DT)
    ref.backward(dy)
    assert torch.equal(model.backward(dy), ref_x.grad)    # same winners get the gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 8, 9, 10), (2, 2), (2, 2), (0, 0)), ((3, 16, 7, 7), (3, 3), (2, 2), (1, 1)),
    ((2, 3, 6, 6), (3, 3), (1, 1), (1, 1)), ((1, 9, 5, 8), (2, 3), (1, 2), (1, 1))])
def test_max_pool_channels_last_equals_max_pool(dtype, shape, kernel, stride, padding):
    from engine.layers.pool import max_pool, max_pool_channels_last
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=DT).to(dtype)
    x[:, :, :3] = 0.5                                 # ties: the winner must be the same element
    x[0, 0] = torch.round(x[0, 0])
    (y, i), (y_cl, i_cl) = max_pool(x, kernel, stride, padding), max_pool_channels_last(x, kernel, stride, padding)
    assert y_cl.is_contiguous() and i_cl.is_contiguous()
    assert torch.equal(y, y_cl) and torch.equal(i, i_cl)
