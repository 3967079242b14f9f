"""engine.optim against torch.optim (foreach=False, fused=False) in float64."""
from __future__ import annotations

import pytest
import torch

from engine import Model, optim

DT = torch.float64
SHAPES = {"0.weight": (6, 4), "0.bias": (6,), "2.weight": (3, 6), "2.bias": (3,), "x": (2, 2, 3)}

# (id, our spec, torch class, torch kwargs)
CONFIGS = [
    ("sgd-plain", {"type": "sgd", "lr": 0.05}, torch.optim.SGD, dict(lr=0.05)),
    ("sgd-momentum", {"type": "sgd", "lr": 0.05, "momentum": 0.9}, torch.optim.SGD,
     dict(lr=0.05, momentum=0.9)),
    ("sgd-dampening", {"type": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0.3}, torch.optim.SGD,
     dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd-nesterov", {"type": "sgd", "lr": 0.05, "momentum": 0.8, "nesterov": True}, torch.optim.SGD,
     dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("sgd-weight_decay", {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, torch.optim.SGD,
     dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("sgd-wd-no-momentum", {"type": "sgd", "lr": 0.05, "weight_decay": 0.1}, torch.optim.SGD,
     dict(lr=0.05, weight_decay=0.1)),
    ("rmsprop-plain", {"type": "rmsprop"}, torch.optim.RMSprop, dict(lr=1e-2)),
    ("rmsprop-momentum", {"type": "rmsprop", "momentum": 0.9, "alpha": 0.9}, torch.optim.RMSprop,
     dict(lr=1e-2, momentum=0.9, alpha=0.9)),
    ("rmsprop-centered", {"type": "rmsprop", "centered": True}, torch.optim.RMSprop,
     dict(lr=1e-2, centered=True)),
    ("rmsprop-weight_decay", {"type": "rmsprop", "weight_decay": 0.05, "eps": 1e-6}, torch.optim.RMSprop,
     dict(lr=1e-2, weight_decay=0.05, eps=1e-6)),
    ("rmsprop-centered-momentum", {"type": "rmsprop", "centered": True, "momentum": 0.7}, torch.optim.RMSprop,
     dict(lr=1e-2, centered=True, momentum=0.7)),
    ("adam-plain", {"type": "adam", "lr": 1e-2}, torch.optim.Adam, dict(lr=1e-2)),
    ("adam-weight_decay", {"type": "adam", "lr": 1e-2, "weight_decay": 0.1, "betas": [0.8, 0.99]},
     torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99))),
    ("adam-amsgrad", {"type": "adam", "lr": 1e-2, "amsgrad": True}, torch.optim.Adam,
     dict(lr=1e-2, amsgrad=True)),
    ("adamw-default", "adamw", torch.optim.AdamW, dict()),
    ("adamw-amsgrad", {"type": "adamw", "lr": 1e-2, "weight_decay": 0.3, "amsgrad": True}, torch.optim.AdamW,
     dict(lr=1e-2, weight_decay=0.3, amsgrad=True)),
]
IDS = [c[0] for c in CONFIGS]


def torch_opt(cls, params, kw):
    extra = dict(foreach=False)
    if cls is not torch.optim.RMSprop:
        extra["fused"] = False
    return cls(params, **kw, **extra)


def initial(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=DT) for k, s in SHAPES.items()}


def as_flat(d):
    """Views of one flat buffer, laid out as Model lays out flat_params."""
    flat = torch.cat([v.reshape(-1) for v in d.values()])
    out, off = {}, 0
    for k, v in d.items():
        out[k] = flat[off:off + v.numel()].view(v.shape)
        off += v.numel()
    return flat, out


def grad_seq(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{k: torch.randn(s, generator=g, dtype=DT) for k, s in SHAPES.items()} for _ in range(n)]


def torch_run(cls, kw, init, grads, lr_at=None):
    tp = [torch.nn.Parameter(v.clone()) for v in init.values()]
    topt = torch_opt(cls, tp, kw)
    for i, gs in enumerate(grads):
        if lr_at is not None:
            topt.param_groups[0]["lr"] = lr_at(i)
        for p, g in zip(tp, gs.values()):
            p.grad = g.clone()
        topt.step()
    return {k: p.detach() for k, p in zip(init, tp)}


def assert_rel(ours, ref, tol=1e-12):
    for k in ref:
        scale = ref[k].abs().max().clamp_min(1e-300)
        err = ((ours[k] - ref[k]).abs().max() / scale).item()
        assert err <= tol, f"{k}: relative error {err:.3e} > {tol}"


@pytest.mark.parametrize("name,spec,cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("layout", ["dict", "flat"])
def test_matches_torch_100_steps(name, spec, cls, kw, layout):
    init, grads = initial(), grad_seq(100)
    if layout == "flat":
        _, params = as_flat({k: v.clone() for k, v in init.items()})
    else:
        params = {k: v.clone() for k, v in init.items()}
    opt = optim.make(spec, params)
    assert opt.is_flat == (layout == "flat")
    for gs in grads:
        opt.step(gs)
    assert opt.steps == 100
    assert_rel(params, torch_run(cls, kw, init, grads))


@pytest.mark.parametrize("name,spec,cls,kw", CONFIGS, ids=IDS)
def test_flat_and_dict_paths_are_bit_identical(name, spec, cls, kw):
    init, grads = initial(), grad_seq(30)
    sep = {k: v.clone() for k, v in init.items()}
    _, flat = as_flat({k: v.clone() for k, v in init.items()})
    a, b = optim.make(spec, sep), optim.make(spec, flat)
    for gs in grads:
        a.step(gs)
        b.step(gs)
    for k in init:
        assert torch.equal(sep[k], flat[k]), k


@pytest.mark.parametrize("name,spec,cls,kw", CONFIGS, ids=IDS)
def test_grad_layouts(name, spec, cls, kw):
    """Flat grads (views or one tensor) and separate grads, for flat and separate params."""
    init, grads = initial(), grad_seq(20)
    ref = torch_run(cls, kw, init, grads)
    _, p1 = as_flat({k: v.clone() for k, v in init.items()})       # flat params, flat grad views
    _, p2 = as_flat({k: v.clone() for k, v in init.items()})       # flat params, one flat grad tensor
    p3 = {k: v.clone() for k, v in init.items()}                   # separate params, one flat grad tensor
    _, p4 = as_flat({k: v.clone() for k, v in init.items()})       # flat params, separate grads (gathered)
    o1, o2, o3, o4 = (optim.make(spec, p) for p in (p1, p2, p3, p4))
    fg, gviews = as_flat({k: torch.zeros(s, dtype=DT) for k, s in SHAPES.items()})
    for gs in grads:
        for k in gs:
            gviews[k].copy_(gs[k])
        o1.step(gviews)
        o2.step(fg)
        o3.step(fg)
        o4.step(gs)
    base = optim.flat_base(list(gviews.values()))     # o1's dict of views is read as fg itself
    assert (base.data_ptr(), base.shape) == (fg.data_ptr(), fg.shape)
    for p in (p1, p2, p3, p4):
        assert_rel(p, ref)
    # the optimizer never writes to the grads it is given
    assert torch.equal(fg, torch.cat([grads[-1][k].reshape(-1) for k in SHAPES]))


@pytest.mark.parametrize("name,spec,cls,kw", CONFIGS, ids=IDS)
def test_lr_changes_mid_run(name, spec, cls, kw):
    init, grads = initial(), grad_seq(100)
    base = optim.parse(spec).lr

    def lr_at(i):
        return base * (1.0 if i < 30 else 0.25 if i < 60 else 3.0 - i / 50)

    _, params = as_flat({k: v.clone() for k, v in init.items()})
    opt = optim.make(spec, params)
    for i, gs in enumerate(grads):
        opt.lr = lr_at(i)
        opt.step(gs)
    assert_rel(params, torch_run(cls, kw, init, grads, lr_at))


@pytest.mark.parametrize("name,spec,cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("layout", ["dict", "flat"])
def test_state_dict_round_trip_is_bit_identical(name, spec, cls, kw, layout, tmp_path):
    from safetensors.torch import load_file, save_file
    init, grads = initial(), grad_seq(100)

    def fresh():
        if layout == "flat":
            return as_flat({k: v.clone() for k, v in init.items()})[1]
        return {k: v.clone() for k, v in init.items()}

    p_full = fresh()
    full = optim.make(spec, p_full)
    for i, gs in enumerate(grads):
        full.lr = 0.01 * (1 + i % 7)
        full.step(gs)

    p_a = fresh()
    a = optim.make(spec, p_a)
    for i, gs in enumerate(grads[:50]):
        a.lr = 0.01 * (1 + i % 7)
        a.step(gs)
    save_file(a.state_dict(), tmp_path / "opt.safetensors")
    state = load_file(tmp_path / "opt.safetensors")
    assert state["step"].item() == 50 and state["lr"].dtype == torch.float64 and state["lr"].dim() == 0
    p_b = fresh()
    for k in p_b:
        p_b[k].copy_(p_a[k])
    b = optim.make(spec, p_b)
    b.load_state_dict(state)
    assert b.steps == 50 and b.lr == a.lr
    for i, gs in enumerate(grads[50:], start=50):
        b.lr = 0.01 * (1 + i % 7)
        b.step(gs)
    for k in p_full:
        assert torch.equal(p_b[k], p_full[k]), k


def test_state_dict_keys_and_errors():
    params = {k: v.clone() for k, v in initial().items()}
    opt = optim.make({"type": "adam", "amsgrad": True}, params)
    sd = opt.state_dict()
    assert set(sd) == {"step", "lr"} | {f"{b}/{k}" for b in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
                                        for k in SHAPES}
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert sd["exp_avg/0.weight"].shape == SHAPES["0.weight"]
    bad = dict(sd)
    del bad["exp_avg/x"]
    with pytest.raises(KeyError, match="missing.*exp_avg/x"):
        opt.load_state_dict(bad)
    bad = dict(sd, **{"exp_avg/x": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"exp_avg/x has shape \(3,\).*\(2, 2, 3\)"):
        opt.load_state_dict(bad)
    with pytest.raises(KeyError, match="unexpected.*momentum_buffer/x"):
        opt.load_state_dict(dict(sd, **{"momentum_buffer/x": torch.zeros(2, 2, 3)}))


def test_flat_base_only_for_tensors_tiling_one_piece_of_memory_in_order():
    flat = torch.arange(10, dtype=DT)
    a, b, c = flat[:4].view(2, 2), flat[4:7], flat[7:]
    base = optim.flat_base([a, b, c])
    assert base.shape == (10,) and base.data_ptr() == flat.data_ptr()
    base.add_(1)                                            # writes through to every view
    assert torch.equal(torch.cat([a.flatten(), b, c]), torch.arange(1, 11, dtype=DT))
    inner = optim.flat_base([b, c])                         # a tail of the memory tiles too
    assert inner.shape == (6,) and inner.data_ptr() == b.data_ptr()
    assert optim.flat_base([b, a, c]) is None               # out of order
    assert optim.flat_base([a, c]) is None                  # a gap
    assert optim.flat_base([a, flat[4:7].clone(), c]) is None   # another tensor's memory
    assert optim.flat_base([flat.view(2, 5).t(), flat[10:]]) is None   # not contiguous
    assert optim.flat_base([]) is None


def test_with_engine_model():
    model = Model.from_spec({"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"},
                                        {"type": "linear", "out_features": 8}, {"type": "relu"},
                                        {"type": "linear", "out_features": 3}]}, (5,), dtype=DT, seed=3)
    init = model.state_dict()
    opt = optim.make({"type": "adamw", "lr": 1e-2, "amsgrad": True}, model.parameters())
    assert opt.is_flat
    base = optim.flat_base(list(model.parameters().values()))   # the memory step updates at once
    assert (base.data_ptr(), base.shape) == (model.flat_params.data_ptr(), model.flat_params.shape)
    tp = [torch.nn.Parameter(init[k].clone()) for k in model.parameters()]
    topt = torch.optim.AdamW(tp, lr=1e-2, amsgrad=True, foreach=False, fused=False)
    gen = torch.Generator().manual_seed(7)
    for i in range(100):
        model.flat_grads.copy_(torch.randn(model.n_parameters, generator=gen, dtype=DT))
        for p, g in zip(tp, model.grads().values()):
            p.grad = g.clone()
        opt.step(model.grads() if i % 2 else model.flat_grads)
        topt.step()
    grads = optim.flat_base(list(model.grads().values()))       # dict grads read as one flat tensor
    assert (grads.data_ptr(), grads.shape) == (model.flat_grads.data_ptr(), model.flat_grads.shape)
    for p, (k, q) in zip(tp, model.parameters().items()):
        assert torch.equal(q, p.detach()), k


def test_make_accepts_spec_dict_and_string_and_rejects_bad():
    params = {"w": torch.zeros(3, dtype=DT)}
    assert optim.make("sgd", params).name == "sgd"
    assert optim.make(optim.parse({"type": "rmsprop"}), params).lr == 1e-2
    with pytest.raises(Exception, match="nesterov"):
        optim.make({"type": "sgd", "nesterov": True}, params)
    with pytest.raises(Exception, match="lion"):
        optim.make("lion", params)
    with pytest.raises(ValueError, match="no parameters"):
        optim.make("sgd", {})
    with pytest.raises(ValueError, match="'b'.*float32.*'w'.*float64"):
        optim.make("sgd", {"w": torch.zeros(2, dtype=DT), "b": torch.zeros(2)})


def test_step_errors_name_the_gradient():
    opt = optim.make("adam", {"w": torch.zeros(3, 2, dtype=DT), "b": torch.zeros(3, dtype=DT)})
    with pytest.raises(KeyError, match=r"missing \['b'\]"):
        opt.step({"w": torch.zeros(3, 2, dtype=DT)})
    with pytest.raises(KeyError, match=r"unexpected \['c'\]"):
        opt.step({"w": torch.zeros(3, 2, dtype=DT), "b": torch.zeros(3, dtype=DT), "c": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"'b' is \(4,\).*parameter is \(3,\)"):
        opt.step({"w": torch.zeros(3, 2, dtype=DT), "b": torch.zeros(4, dtype=DT)})
    with pytest.raises(ValueError, match=r"9 elements.*shape \(8,\)"):
        opt.step(torch.zeros(8, dtype=DT))
    assert opt.steps == 0


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    g = grad_seq(1, seed=11)[0]
    ref = [torch.nn.Parameter(torch.zeros_like(v)) for v in g.values()]
    for p, v in zip(ref, g.values()):
        p.grad = v.clone()
    ref_total = torch.nn.utils.clip_grad_norm_(ref, max_norm, foreach=False)
    ref_grads = {k: p.grad for k, p in zip(g, ref)}

    sep = {k: v.clone() for k, v in g.items()}
    total = optim.clip_grad_norm_(sep, max_norm)
    assert total.dim() == 0
    assert torch.equal(total, ref_total)  # same per-tensor norms, same stacking
    for k in g:
        assert torch.equal(sep[k], ref_grads[k]), k

    for as_tensor in (False, True):  # views of one flat buffer (one norm on the buffer), or the buffer
        flat, views = as_flat({k: v.clone() for k, v in g.items()})
        t = optim.clip_grad_norm_(flat if as_tensor else views, max_norm)
        assert abs(t.item() - ref_total.item()) <= 1e-12 * ref_total.item()
        assert_rel(views, ref_grads)
    if max_norm == 1e6:
        for k in g:
            assert torch.equal(sep[k], g[k])  # coefficient clamps to exactly 1
