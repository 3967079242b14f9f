"""The engine's speed shortcuts give the same numbers as the plain path, in float64.

Model.backward(dout, need_input_grad=False) skips the input gradient: every parameter
gradient must still be bit-identical to the full backward's. Cross-entropy switches its
log-softmax form by batch size: both forms must match torch. Adam's one-kernel denominator
must stay bit-identical to torch.optim's single-tensor update. A relu runs in place only on
a tensor nobody else reads. TrainStep runs under torch.inference_mode: every buffer that
outlives a step must stay writable outside it. Max pooling over 8+ channels goes through the
channels-last kernel: values, winners (ties included) and gradients must not change.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input as conv_input

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
    calls = []
    monkeypatch.setattr(conv, "conv2d_input", lambda *a, **kw: calls.append(a[0]) or conv_input(*a, **kw))
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
@pytest.mark.parametrize("n", [64, 65, 300])   # both sides of the log-softmax switch
def test_cross_entropy_large_batches_match_torch(n, smoothing):
    g = torch.Generator().manual_seed(n)
    pred = torch.randn(n, 10, generator=g, dtype=DT) * 3
    pred[:4] = torch.tensor([[1000.0] + [-1000.0] * 9, [-1000.0] * 9 + [1000.0],
                             [1000.0, 1000.0] + [-1000.0] * 8, [0.0] * 10], dtype=DT)   # extreme rows
    target = torch.randint(0, 10, (n,), generator=g)
    z = pred.clone().requires_grad_(True)
    ref = F.cross_entropy(z, target, label_smoothing=smoothing)
    ref.backward()
    loss = losses.make({"type": "cross_entropy", "label_smoothing": smoothing})
    value = loss.forward(pred, target)
    grad = loss.backward()
    assert abs(value.item() - ref.item()) <= 1e-12 * abs(ref.item())
    assert (grad - z.grad).abs().max().item() <= 1e-10 * z.grad.abs().max().item()


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


def _inplace_flags(spec, shape):
    model = Model.from_spec(spec, shape, dtype=DT)
    return {k: layer.inplace for k, layer in model.layer_items() if layer.kind == "relu"}


def test_relu_in_place_only_on_a_private_temporary():
    seq = {"layers": [{"type": "relu"}, {"type": "linear", "out_features": 4}, {"type": "relu"},
                      {"type": "batchnorm"}, {"type": "relu"}, {"type": "linear", "out_features": 2}]}
    # the model input and a batchnorm output are never overwritten; a linear's output is
    assert _inplace_flags(seq, (3,)) == {"0": False, "2": True, "4": False}
    cnn, _ = NETS["cnn"]
    assert _inplace_flags(cnn, (2, 6, 6)) == {"1": True}
    dag, _ = NETS["residual_dag"]     # 'a' feeds the relu and the residual add: no overwrite
    assert _inplace_flags(dag, (6,)) == {"r": False}


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual_dag"])
def test_relu_in_place_changes_no_number(name):
    spec, shape = NETS[name]
    fast, plain = (Model.from_spec(spec, shape, seed=4, dtype=DT) for _ in range(2))
    for layer in plain.layers:
        if layer.kind == "relu":
            layer.inplace = False
    g = torch.Generator().manual_seed(5)
    x = torch.randn((3, *shape), generator=g, dtype=DT)
    x0 = x.clone()
    dout = torch.randn((3, *fast.output_shape), generator=g, dtype=DT)
    assert torch.equal(fast.forward(x), plain.forward(x))
    assert torch.equal(fast.backward(dout), plain.backward(dout))
    assert torch.equal(fast.flat_grads, plain.flat_grads)
    assert torch.equal(x, x0)                                   # the input is never written


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
