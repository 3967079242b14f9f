"""A whole GPT trained by the engine equals its torch.nn twin trained by torch.optim: 2 blocks,
2 heads, a tied head, 25 AdamW steps on (N, T) windows with next-token targets, in float64.
(llm.c's test_gpt2: the hand-written model must match the reference's loss at every step.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from chainrule.twin import twin
from engine import Model, losses, optim
from engine.train.step import TrainStep

from sequence_support import gpt, windows

F64 = torch.float64


def test_25_adamw_steps_equal_the_twin_trained_by_torch():
    vocab, context = 13, 8
    spec = gpt(vocab=vocab, dim=8, context=context, blocks=2)
    model = Model.from_spec(spec, (context,), seed=0, dtype=F64)
    net = twin(spec, (context,), dtype=F64)
    net.load_state_dict(model.state_dict(), strict=True)
    adamw = {"type": "adamw", "lr": 3e-3, "weight_decay": 0.1}
    step = TrainStep(model, losses.make("cross_entropy"), optim.make(adamw, model.parameters()))
    reference = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    assert len(list(net.parameters())) == len(model.parameters())   # the tied table counted once in both
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, vocab, (400,), generator=g)
    engine_losses, torch_losses = [], []
    for _ in range(25):
        x, y = windows(text, 4, context, g)
        engine_losses.append(float(step(x, y)))
        reference.zero_grad()
        loss = F.cross_entropy(net(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        reference.step()
        torch_losses.append(loss.item())
    for a, b in zip(engine_losses, torch_losses):
        assert abs(a - b) <= 1e-9 * abs(b)
    assert engine_losses[-1] < engine_losses[0] - 0.1                 # it learned something
    ref = net.state_dict()
    for name, value in model.state_dict().items():
        err = (value - ref[name]).abs().max() / ref[name].abs().max().clamp_min(1e-300)
        assert err <= 1e-9, (name, float(err))
