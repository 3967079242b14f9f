"""Attention entropy per head (engine.diagnostics.stats) and the rules that read it
(engine.diagnostics.attention_rules): measured values against torch.nn.MultiheadAttention's own
weights, the uniform bound in closed form, and the findings a run gets."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine import Model, fit, losses, optim
from engine.diagnostics import Diagnosis
from engine.diagnostics.stats import ActivationStats, attention_entropy, uniform_entropy
from engine.spec.diagnostics import Diagnostics
from sequence_support import gpt


def test_uniform_entropy_is_log_t_and_its_causal_mean():
    assert uniform_entropy(7, causal=False) == pytest.approx(math.log(7))
    assert uniform_entropy(7, causal=True) == pytest.approx(sum(math.log(i + 1) for i in range(7)) / 7)
    t = 5
    uniform = torch.full((1, 1, t, t), 1 / t, dtype=torch.float64)
    assert attention_entropy(uniform).item() == pytest.approx(math.log(t))
    causal = torch.tril(torch.ones(t, t, dtype=torch.float64))
    causal = (causal / causal.sum(-1, keepdim=True)).expand(2, 3, t, t)
    assert attention_entropy(causal).tolist() == pytest.approx([uniform_entropy(t, True)] * 3)
    one_hot = torch.eye(t, dtype=torch.float64).expand(1, 2, t, t)      # each query on one token: 0, no NaN
    assert attention_entropy(one_hot).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("causal", [True, False])
def test_each_heads_entropy_equals_torch_multihead_attentions_weights(causal):
    t, d, h = 6, 8, 2
    model = Model.from_spec({"layers": [{"type": "self_attention", "num_heads": h, "causal": causal}]}, (t, d),
                            seed=1, dtype=torch.float64)
    x = torch.randn(4, t, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    stats = ActivationStats()
    model.forward(x, training=True, observe=stats)
    ours = stats.stats["0"]

    mha = nn.MultiheadAttention(d, h, batch_first=True, dtype=torch.float64)
    mha.load_state_dict({k.removeprefix("0."): v for k, v in model.state_dict().items()}, strict=True)
    mask = torch.ones(t, t, dtype=torch.bool).triu(1) if causal else None
    _, p = mha(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)     # (N, H, T, T)
    expected = -(torch.special.xlogy(p, p)).sum(-1).mean(dim=(0, 2))
    torch.testing.assert_close(ours["attention_entropy"], expected, rtol=1e-12, atol=1e-12)
    assert ours["attention_entropy_max"].item() == pytest.approx(uniform_entropy(t, causal))
    assert (expected < uniform_entropy(t, causal)).all()     # weights that differ are below uniform


def epoch(n, entropies, top):
    return {"epoch": n, "steps": 10 * n, "train_loss": 1.0, "val_loss": 1.0,
            "layers": {"blocks.0.attn": {"type": "self_attention", "grad_norm": 1.0, "weight_norm": 1.0,
                                         "update_ratio": 1e-3, "attention_entropy": entropies,
                                         "attention_entropy_max": top}}}


def test_a_collapsed_head_is_named_once_with_its_entropy():
    diagnosis = Diagnosis(Diagnostics())
    assert diagnosis.after_epoch(epoch(1, [0.05, 1.2, 0.02, 1.0], 2.0)) == []      # consecutive: 2
    (found,) = [f for f in diagnosis.after_epoch(epoch(2, [0.05, 1.2, 0.02, 1.0], 2.0))
                if f.code == "attention_collapsed"]
    assert found.layer == {"key": "blocks.0.attn", "type": "self_attention"}
    assert found.value == 0.02 and found.threshold == 0.1
    assert "heads 0, 2 of 4" in found.message and "0.05, 0.02 nats" in found.message
    assert [f.code for f in diagnosis.after_epoch(epoch(3, [0.05, 1.2, 0.02, 1.0], 2.0))] == []   # once


def test_a_head_near_uniform_for_three_epochs_is_named_and_one_that_learns_is_not():
    diagnosis = Diagnosis(Diagnostics())
    codes = [[f.code for f in diagnosis.after_epoch(epoch(n, [1.99, 1.5], 2.0))] for n in (1, 2, 3)]
    assert codes == [[], [], ["attention_uniform"]]
    other = Diagnosis(Diagnostics(rules={"attention_uniform": {"threshold": 0.999}}))
    assert all(other.after_epoch(epoch(n, [1.99, 1.5], 2.0)) == [] for n in (1, 2, 3))   # 0.995 < 0.999


def test_a_gpt_run_reports_each_heads_entropy_and_finds_heads_that_never_leave_uniform():
    text = torch.tensor(list(b"abcdefgh" * 60), dtype=torch.int64)
    model = Model.from_spec(gpt(vocab=256, dim=8, context=8, blocks=2, heads=2, init_std=0.02), (8,), seed=0,
                            dtype=torch.float64)
    for key in ("blocks.0.attn", "blocks.1.attn"):          # q = k = 0: every score equal, the weights uniform
        model.parameters()[f"{key}.in_proj_weight"][:16].zero_()
    opt = optim.make({"type": "sgd", "lr": 1e-9}, model.parameters())       # nothing moves: heads stay uniform
    result = fit(model, losses.make("cross_entropy"), opt, text, None,
                 {"epochs": 3, "batch_size": 4, "steps_per_epoch": 2, "validation_split": 0.1, "seed": 0},
                 task="language_model")
    for e in result.history:
        for key in ("blocks.0.attn", "blocks.1.attn"):
            entry = e["layers"][key]
            assert len(entry["attention_entropy"]) == 2
            assert entry["attention_entropy_max"] == pytest.approx(uniform_entropy(8, causal=True))
            assert all(0.99 * entry["attention_entropy_max"] < v <= entry["attention_entropy_max"] + 1e-12
                       for v in entry["attention_entropy"])
    found = [f for e in result.history for f in e.get("findings", []) if f["code"] == "attention_uniform"]
    assert [(f["epoch"], f["layer"]["key"]) for f in found] == [(3, "blocks.0.attn"), (3, "blocks.1.attn")]
