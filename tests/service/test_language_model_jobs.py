"""A GPT on a text through the API: submit (context_length, the checks a language model gets),
train (the worker's attempt, in process), the curves with perplexity, weights that load strict into the
twin with the tokenizer beside them, and generation equal to the twin's token for token."""
from __future__ import annotations

import json

import pytest
import safetensors
import torch
from safetensors.torch import load_file

from chainrule.twin import twin
from engine.text import Tokenizer
from sequence_support import gpt
from worker import runner

pytestmark = pytest.mark.timeout(120)
TEXT = ("Nothing is so good as it seems beforehand. " * 30).encode()
CONTEXT = 16


def gpt_job(vocab: int, **overrides) -> dict:
    spec = gpt(vocab=vocab, dim=16, context=CONTEXT, blocks=1, heads=2, init_std=0.02)
    return {"model": spec, "context_length": CONTEXT, "optimizer": {"type": "adamw", "lr": 0.01},
            "epochs": 3, "batch_size": 8, "steps_per_epoch": 20, "validation_split": 0.1, **overrides}


@pytest.fixture
def text(svc):
    return svc.dataset(TEXT, "sentence.txt", tokenizer="char")


def test_a_gpt_trains_on_a_text_and_generates_what_its_twin_generates(svc, text):
    vocab = text["vocab_size"]
    r = svc.submit(text["id"], **gpt_job(vocab))
    assert r.status_code == 202, r.text
    job = r.json()
    torch.set_num_threads(1)
    assert runner.run_job(svc.settings, job["id"], torch.device("cpu")) == "succeeded"
    epochs = svc.client.get(f"/v1/jobs/{job['id']}/metrics", headers=svc.a).json()["epochs"]
    assert len(epochs) == 3 and epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    assert epochs[-1]["val_perplexity"] == pytest.approx(2.718281828 ** epochs[-1]["val_loss"], rel=1e-6)
    assert "blocks.0.attn" in epochs[-1]["layers"]               # gradient health per block's layers

    weights = svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a)
    path = svc.settings.data_dir / "w.safetensors"
    path.write_bytes(weights.content)
    with safetensors.safe_open(str(path), "pt") as f:
        tokenizer = Tokenizer.from_dict(json.loads(f.metadata()["tokenizer"]))
    net = twin(gpt_job(vocab)["model"], (CONTEXT,)).eval()
    net.load_state_dict(load_file(str(path)), strict=True)

    r = svc.client.post(f"/v1/jobs/{job['id']}/generate", headers=svc.a,
                        json={"prompt": "Nothing is", "max_new_tokens": 40, "temperature": 0})
    assert r.status_code == 200, r.text
    out = r.json()
    ids = tokenizer.encode("Nothing is")
    with torch.no_grad():
        for _ in range(40):
            ids = torch.cat([ids, net(ids[-CONTEXT:].unsqueeze(0))[0, -1].argmax().view(1)])
    assert out["ids"] == ids.tolist() and out["text"] == tokenizer.decode(ids)
    assert out["text"].startswith("Nothing is") and out["generated"] == out["text"][len("Nothing is"):]
    sampled = [svc.client.post(f"/v1/jobs/{job['id']}/generate", headers=svc.a,
                               json={"prompt": "N", "max_new_tokens": 30, "temperature": 1.0, "top_k": 5,
                                     "seed": 3}).json()["text"] for _ in range(2)]
    assert sampled[0] == sampled[1]


@pytest.mark.parametrize("change,where,message", [
    ({"context_length": None}, "context_length", "set context_length"),
    ({"context_length": 10_000}, "context_length", "exceeds the limit of 4096"),
    ({"loss": "mse"}, "loss", "use cross_entropy"),
    ({"model": {"layers": [{"type": "linear", "out_features": 4}]}}, "loss", "start the model with an embedding"),
])
def test_a_language_model_job_that_cannot_work_is_refused_naming_the_field(svc, text, change, where, message):
    body = {**gpt_job(text["vocab_size"]), **change}
    r = svc.submit(text["id"], **{k: v for k, v in body.items() if v is not None or k != "context_length"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(where in d["loc"] and message in d["msg"] for d in detail), detail


def test_the_head_must_cover_the_vocabulary(svc, text):
    body = gpt_job(text["vocab_size"] + 3)
    r = svc.submit(text["id"], **body)
    assert r.status_code == 422 and f"(N, {CONTEXT}, {text['vocab_size']})" in r.text


def test_context_length_is_refused_on_a_table_and_generate_on_a_classifier(svc, iris):
    r = svc.submit(iris["id"], context_length=8)
    assert r.status_code == 422 and "context_length is for language models" in r.text
    job = svc.submit(iris["id"]).json()
    r = svc.client.post(f"/v1/jobs/{job['id']}/generate", headers=svc.a, json={"prompt": "x"})
    assert r.status_code == 409 and "generation needs a language model" in r.text


def test_generate_limits_and_another_keys_job(svc, text):
    job = svc.submit(text["id"], **gpt_job(text["vocab_size"])).json()
    assert runner.run_job(svc.settings, job["id"], torch.device("cpu")) == "succeeded"
    r = svc.client.post(f"/v1/jobs/{job['id']}/generate", headers=svc.a, json={"prompt": "N", "max_new_tokens": 5000})
    assert r.status_code == 422 and "max_new_tokens 5000 exceeds the limit of 2000" in r.text
    r = svc.client.post(f"/v1/jobs/{job['id']}/generate", headers=svc.a, json={"prompt": "Z@"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "prompt"]
    r = svc.client.post(f"/v1/jobs/{job['id']}/generate", headers=svc.b, json={"prompt": "N"})
    assert r.status_code == 404


def test_the_readmes_gpt_example_is_nanogpts_char_model_and_is_admitted(svc):
    """examples/jobs/gpt_char.json: 4 blocks of 4 heads, 128 wide, context 64, a head tied to the 85 characters
    of the corpus; submitted as the README says, on a char text of 85 characters."""
    from pathlib import Path
    body = json.loads((Path(__file__).parents[2] / "examples" / "jobs" / "gpt_char.json").read_text())
    chars = "".join(chr(c) for c in range(32, 117))                 # 85 characters, as the corpus has
    text = svc.dataset((chars * 200).encode(), "corpus.txt", tokenizer="char")
    assert text["vocab_size"] == 85
    r = svc.submit(text["id"], **body)
    assert r.status_code == 202, r.text
    assert r.json()["n_parameters"] == 85 * 128 + 64 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128
