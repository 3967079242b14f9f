"""engine.generate: greedy generation equals the torch twin's token for token; sampling is seeded."""
from __future__ import annotations

import pytest
import torch

from chainrule.twin import twin
from engine import Model
from engine.generate import generate
from sequence_support import gpt


def twin_greedy(net, prompt: torch.Tensor, steps: int, context: int) -> torch.Tensor:
    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, net(ids[-context:].unsqueeze(0))[0, -1].argmax().view(1)])
    return ids


def test_greedy_generation_equals_the_twins_token_for_token_past_the_context():
    model = Model.from_spec(gpt(vocab=17, dim=16, context=8, heads=4), (8,), seed=3, dtype=torch.float64)
    net = twin(model.spec, (8,), dtype=torch.float64).eval()
    net.load_state_dict(model.state_dict(), strict=True)
    prompt = torch.tensor([1, 5, 2])
    ours = generate(model, prompt, max_new_tokens=20, temperature=0)        # 23 ids: the window slides
    assert torch.equal(ours, twin_greedy(net, prompt, 20, 8))
    assert torch.equal(ours[:3], prompt)


def test_sampling_is_seeded_and_top_k_keeps_to_the_k_likeliest():
    model = Model.from_spec(gpt(vocab=17, dim=16, context=8, heads=4), (8,), seed=3)
    prompt = torch.tensor([4])
    a = generate(model, prompt, max_new_tokens=30, temperature=1.0, seed=7)
    assert torch.equal(a, generate(model, prompt, max_new_tokens=30, temperature=1.0, seed=7))
    assert not torch.equal(a, generate(model, prompt, max_new_tokens=30, temperature=1.0, seed=8))
    assert torch.equal(generate(model, prompt, max_new_tokens=10, top_k=1, seed=1),
                       generate(model, prompt, max_new_tokens=10, temperature=0))


@pytest.mark.parametrize("kwargs,message", [
    ({"temperature": -1}, "temperature -1 is out of range"),
    ({"top_k": 18}, "top_k 18 is out of range; valid: 1 to the vocabulary size 17"),
])
def test_bad_arguments_are_named(kwargs, message):
    model = Model.from_spec(gpt(vocab=17, dim=16, context=8, heads=4), (8,))
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([1]), max_new_tokens=2, **kwargs)
    with pytest.raises(ValueError, match="token id 40"):
        generate(model, torch.tensor([40]), max_new_tokens=2)
