"""engine.losses against torch.nn.functional + autograd in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine import losses

DT = torch.float64
VALUE_TOL, GRAD_TOL = 1e-12, 1e-10


def reference(fn, pred, target):
    z = pred.clone().requires_grad_(True)
    value = fn(z, target)
    value.backward()
    return value.detach(), z.grad


def check(loss, fn, pred, target):
    ref_value, ref_grad = reference(fn, pred, target)
    value = loss.forward(pred.clone(), target.clone())
    grad = loss.backward()
    assert value.dim() == 0 and value.dtype == DT
    assert grad.shape == pred.shape and grad.dtype == DT
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    verr = ((value - ref_value).abs() / ref_value.abs().clamp_min(1e-300)).item()
    assert verr <= VALUE_TOL, f"value {value.item()} vs torch {ref_value.item()}: rel err {verr:.3e}"
    gerr = ((grad - ref_grad).abs().max() / ref_grad.abs().max().clamp_min(1e-300)).item()
    assert gerr <= GRAD_TOL, f"grad rel err {gerr:.3e}"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("n,c", [(1, 2), (16, 5), (64, 10)])
def test_cross_entropy(smoothing, n, c):
    g = gen(n + c)
    pred = torch.randn(n, c, generator=g, dtype=DT) * 3
    target = torch.randint(0, c, (n,), generator=g)
    loss = losses.make({"type": "cross_entropy", "label_smoothing": smoothing})
    check(loss, lambda z, t: F.cross_entropy(z, t, label_smoothing=smoothing), pred, target)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_extreme_logits_stay_finite(smoothing):
    pred = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0],
                         [1000.0, 1000.0, -1000.0], [-1000.0, 999.0, 1000.0]], dtype=DT)
    target = torch.tensor([1, 2, 0, 0])
    check(losses.make({"type": "cross_entropy", "label_smoothing": smoothing}),
          lambda z, t: F.cross_entropy(z, t, label_smoothing=smoothing), pred, target)


def test_cross_entropy_accepts_int32_labels():
    pred = torch.randn(8, 4, generator=gen(), dtype=DT)
    target = torch.randint(0, 4, (8,), generator=gen(1))
    loss = losses.make("cross_entropy")
    v32 = loss.forward(pred, target.to(torch.int32))
    assert torch.equal(v32, loss.forward(pred, target))


def test_cross_entropy_errors():
    loss = losses.make("cross_entropy")
    pred = torch.zeros(4, 3, dtype=DT)
    with pytest.raises(ValueError, match=r"target\[2\] = 3 is not a class index; valid labels are 0\.\.2"):
        loss.forward(pred, torch.tensor([0, 1, 3, 2]))
    with pytest.raises(ValueError, match=r"target\[1\] = -1"):
        loss.forward(pred, torch.tensor([0, -1, 1, 2]))
    with pytest.raises(ValueError, match=r"target must be \(4,\) class indices.*\(4, 3\).*got shape \(4, 1\)"):
        loss.forward(pred, torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        loss.forward(pred, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"integer class indices, got dtype torch\.float64"):
        loss.forward(pred, torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, T, C\) logits, got shape \(4,\)"):
        loss.forward(torch.zeros(4, dtype=DT), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="backward\\(\\) called without a forward"):
        losses.make("cross_entropy").backward()
    # unchecked mode skips the host sync (and the check)
    losses.make("cross_entropy", check_labels=False).forward(pred, torch.tensor([0, 1, 2, 2]))


REGRESSION = {
    "mse": lambda z, t: F.mse_loss(z, t),
    "l1": lambda z, t: F.l1_loss(z, t),
}


@pytest.mark.parametrize("name", ["mse", "l1"])
@pytest.mark.parametrize("shape", [(7,), (16, 1), (8, 3, 2)])
def test_mse_l1(name, shape):
    g = gen(len(shape))
    pred = torch.randn(shape, generator=g, dtype=DT)
    target = torch.randn(shape, generator=g, dtype=DT)
    check(losses.make(name), REGRESSION[name], pred, target)


def test_l1_gradient_is_zero_where_pred_equals_target():
    pred = torch.tensor([1.0, 2.0, 3.0, -4.0], dtype=DT)
    target = torch.tensor([1.0, 0.0, 3.0, -2.0], dtype=DT)
    loss = losses.make("l1")
    loss.forward(pred, target)
    assert torch.equal(loss.backward(), torch.tensor([0.0, 0.25, 0.0, -0.25], dtype=DT))
    check(loss, F.l1_loss, pred, target)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber(delta):
    g = gen()
    target = torch.randn(64, 3, generator=g, dtype=DT)
    pred = target + torch.randn(64, 3, generator=g, dtype=DT) * 2 * delta  # both sides of delta
    pred[0, 0] = target[0, 0] + delta                                       # exactly on the edge
    pred[0, 1] = target[0, 1] - delta
    d = (pred - target).abs()
    assert (d < delta).any() and (d > delta).any()
    check(losses.make({"type": "huber", "delta": delta}),
          lambda z, t: F.huber_loss(z, t, delta=delta), pred, target)


@pytest.mark.parametrize("fractional", [False, True])
def test_bce_with_logits(fractional):
    g = gen(3)
    pred = torch.randn(32, 4, generator=g, dtype=DT) * 4
    target = (torch.rand(32, 4, generator=g, dtype=DT) if fractional
              else torch.randint(0, 2, (32, 4), generator=g).to(DT))
    check(losses.make("bce_with_logits"), F.binary_cross_entropy_with_logits, pred, target)


def test_bce_with_logits_extreme_logits_stay_finite():
    pred = torch.tensor([1000.0, -1000.0, 1000.0, -1000.0, 0.0, 35.0], dtype=DT)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.3], dtype=DT)
    check(losses.make("bce_with_logits"), F.binary_cross_entropy_with_logits, pred, target)


def test_bce_accepts_integer_targets():
    pred = torch.randn(5, 1, generator=gen(), dtype=DT)
    t = torch.tensor([[0], [1], [1], [0], [1]])
    loss = losses.make("bce_with_logits")
    assert torch.equal(loss.forward(pred, t), loss.forward(pred, t.to(DT)))


@pytest.mark.parametrize("name", ["mse", "l1", "huber", "bce_with_logits"])
def test_elementwise_shape_mismatch_names_both_shapes(name):
    loss = losses.make(name)
    with pytest.raises(ValueError, match=rf"{name} loss: pred has shape \(8, 1\) but target has shape \(8,\)"):
        loss.forward(torch.zeros(8, 1, dtype=DT), torch.zeros(8, dtype=DT))
    with pytest.raises(ValueError, match=r"empty"):
        loss.forward(torch.zeros(0, 1, dtype=DT), torch.zeros(0, 1, dtype=DT))


def test_make_accepts_spec_dict_and_string():
    from engine.spec import HuberLoss
    assert losses.make("mse").name == "mse"
    assert losses.make({"type": "huber", "delta": 2}).spec.delta == 2.0
    assert losses.make(HuberLoss(type="huber", delta=0.5)).spec.delta == 0.5
    assert losses.make({"type": "cross_entropy", "label_smoothing": 0.2}).name == "cross_entropy"
    with pytest.raises(Exception, match="hinge"):
        losses.make("hinge")
    with pytest.raises(Exception, match="label_smoothing"):
        losses.make({"type": "cross_entropy", "label_smoothing": 1.5})


def test_float32_inputs():
    g = gen()
    pred = torch.randn(10, 3, generator=g)
    target = torch.randint(0, 3, (10,), generator=g)
    loss = losses.make({"type": "cross_entropy", "label_smoothing": 0.1})
    v = loss.forward(pred, target)
    ref = F.cross_entropy(pred.double(), target, label_smoothing=0.1)
    assert v.dtype == torch.float32 and abs(v.item() - ref.item()) < 1e-5
    assert loss.backward().dtype == torch.float32
