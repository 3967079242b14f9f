"""GET /v1/jobs/{id}/attention: each head's weights on one sequence, from a succeeded job's weights or a
running job's latest checkpoint, on the start of the validation tail or on the caller's text; equal to
torch.nn.MultiheadAttention's own weights in the twin."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from chainrule.twin import twin
from core import artifacts
from core.lifecycle import JobStatus
from core.tables import Job
from engine import checkpoint as ckpt_io
from engine.text import Tokenizer, split_tokens
from sequence_support import gpt
from worker import runner

pytestmark = pytest.mark.timeout(120)
TEXT = "A cynic is a blackguard whose faulty vision sees things as they are. " * 12
CONTEXT = 16


def twin_maps(spec, state, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """P per attention layer of the torch twin, from nn.MultiheadAttention(need_weights=True)."""
    net = twin(spec, (CONTEXT,), dtype=torch.float32).eval()
    net.load_state_dict(state, strict=True)
    maps, t = {}, ids.numel()
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)

    def hook(name):
        def grab(module, args):
            (x,) = args
            _, p = nn.MultiheadAttention.forward(module, x, x, x, attn_mask=mask, need_weights=True,
                                                 average_attn_weights=False)
            maps[name] = p[0]
        return grab
    for name, module in net.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            module.register_forward_pre_hook(hook(name))
    with torch.no_grad():
        net(ids.unsqueeze(0))
    return maps


@pytest.fixture
def trained(svc):
    data = svc.dataset(TEXT.encode(), "cynic.txt", tokenizer="char")
    spec = gpt(vocab=data["vocab_size"], dim=16, context=CONTEXT, blocks=2, heads=2, init_std=0.02)
    r = svc.submit(data["id"], model=spec, context_length=CONTEXT, optimizer={"type": "adamw", "lr": 0.01},
                   epochs=2, batch_size=8, steps_per_epoch=10, validation_split=0.2)
    assert r.status_code == 202, r.text
    job = r.json()
    torch.set_num_threads(1)
    assert runner.run_job(svc.settings, job["id"], torch.device("cpu")) == "succeeded"
    return job, spec


def test_a_gpts_attention_on_its_validation_tail_equals_the_twins(svc, trained):
    job, spec = trained
    r = svc.client.get(f"/v1/jobs/{job['id']}/attention", headers=svc.a, params={"length": 12})
    assert r.status_code == 200, r.text
    out = r.json()
    tokenizer = Tokenizer.char(TEXT)
    tail = split_tokens(tokenizer.encode(TEXT), 0.2)[1][:12]
    assert (out["source"], out["epoch"], out["sample"]) == ("weights", 2, "validation")
    assert out["ids"] == tail.tolist() and "".join(out["tokens"]) == tokenizer.decode(tail)
    assert [layer["key"] for layer in out["layers"]] == ["blocks.0.attn", "blocks.1.attn"]

    weights = svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a).content
    path = svc.settings.data_dir / "w.safetensors"
    path.write_bytes(weights)
    expected = twin_maps(spec, load_file(str(path)), tail)
    for layer in out["layers"]:
        p = torch.tensor(layer["heads"], dtype=torch.float32)                 # (H, T, T)
        assert p.shape == (2, 12, 12)
        torch.testing.assert_close(p, expected[layer["key"]], atol=2e-5, rtol=0)
        assert torch.triu(p, 1).abs().max() == 0                                # causal
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 12), atol=1e-4, rtol=0)
        entropy = -(torch.special.xlogy(p.double(), p.double())).sum(-1).mean(-1)
        assert layer["entropy"] == pytest.approx(entropy.tolist(), abs=1e-3)
        assert all(0 <= e <= math.lgamma(13) / 12 + 1e-6 for e in layer["entropy"])


def test_your_own_text_and_a_running_jobs_checkpoint(svc, trained):
    job, spec = trained
    r = svc.client.get(f"/v1/jobs/{job['id']}/attention", headers=svc.a, params={"text": "a cynic"})
    assert r.status_code == 200, r.text
    assert r.json()["sample"] == "text" and r.json()["tokens"] == list("a cynic")
    assert len(r.json()["layers"][0]["heads"][0]) == 7

    # the same job while it runs: its latest checkpoint's weights (here the final ones, scaled)
    state = {k: v * 0.5 for k, v in load_file(str(artifacts.resolve(svc.settings, artifacts.weights_relpath(job["id"])))).items()}
    relpath = artifacts.checkpoint_relpath(job["id"])
    ckpt_io.save(artifacts.resolve(svc.settings, relpath), ckpt_io.Checkpoint(epoch=1, step=10, model_state=state,
                                                                              optimizer_state={}))
    with svc.session() as s:
        row = s.get(Job, job["id"])
        row.status, row.checkpoint_path = JobStatus.RUNNING, relpath
        s.commit()
    out = svc.client.get(f"/v1/jobs/{job['id']}/attention", headers=svc.a, params={"text": "a cynic"}).json()
    assert (out["source"], out["epoch"]) == ("checkpoint", 1)
    ids = Tokenizer.char(TEXT).encode("a cynic")
    expected = twin_maps(spec, state, ids)["blocks.1.attn"]
    torch.testing.assert_close(torch.tensor(out["layers"][1]["heads"]), expected, atol=2e-5, rtol=0)


def test_what_has_no_attention_maps_is_named(svc, trained, iris):
    job, _ = trained
    get = lambda jid, **q: svc.client.get(f"/v1/jobs/{jid}/attention", headers=svc.a, params=q)
    r = get(job["id"], length=CONTEXT + 1)
    assert r.status_code == 422 and f"exceeds the job's context length of {CONTEXT}" in r.text
    r = get(job["id"], text="\u00e9t\u00e9")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "text"]
    assert svc.client.get(f"/v1/jobs/{job['id']}/attention", headers=svc.b).status_code == 404
    mlp = svc.submit(iris["id"]).json()
    r = get(mlp["id"])
    assert r.status_code == 409 and "has no checkpoint yet" in r.text
