"""A sequence classifier trained on a CSV of texts answers predict on raw text: the job's tokenizer
makes the ids as its dataset's were (cut or padded to the row length), and the answer equals predict on
those ids and the torch twin on them."""
from __future__ import annotations

import csv
import json
import io

import pytest
import torch
from safetensors.torch import load_file

from chainrule.twin import twin
from engine.text import Tokenizer
from worker import runner

pytestmark = pytest.mark.timeout(120)
WORDS = {"pos": ["good", "great", "fine", "nice", "lovely"], "neg": ["bad", "awful", "dull", "poor", "grim"]}
MODEL = {"layers": [
    {"type": "embedding", "num_embeddings": 257, "embedding_dim": 8, "padding_idx": 256},
    {"type": "self_attention", "name": "attn", "num_heads": 2, "causal": False},
    {"type": "seq_pool", "mode": "mean", "padding_idx": 256, "inputs": ["attn", "input"]},
    {"type": "linear", "out_features": 2}]}


def reviews() -> bytes:
    g = torch.Generator().manual_seed(0)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["review", "label"])
    for i in range(80):
        label = "pos" if i % 2 else "neg"
        words = WORDS[label]
        w.writerow([" ".join(words[int(j)] for j in torch.randint(0, 5, (2,), generator=g)), label])
    return out.getvalue().encode()


def test_predict_on_raw_text_equals_predict_on_its_ids_and_the_twin(svc):
    ds = svc.dataset(reviews(), "reviews.csv", text_column="review")
    length = ds["input_shape"][0]
    r = svc.submit(ds["id"], model=MODEL, optimizer={"type": "adam", "lr": 0.05}, epochs=15, batch_size=16)
    assert r.status_code == 202, r.text
    job = r.json()
    torch.set_num_threads(1)
    assert runner.run_job(svc.settings, job["id"], torch.device("cpu")) == "succeeded"

    texts = ["great nice", "awful dull", "a text longer than any row the model was trained on, cut to length"]
    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": texts})
    assert r.status_code == 200, r.text
    by_text = r.json()
    assert by_text["classes"][:2] == ["pos", "neg"]

    ids = Tokenizer.byte(pad=True).encode_padded(texts, length)
    assert ids[2].tolist() == list(texts[2].encode()[:length])
    by_ids = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": ids.tolist()}).json()
    assert by_ids == by_text

    path = svc.settings.data_dir / "w.safetensors"
    path.write_bytes(svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a).content)
    net = twin(MODEL, (length,), dtype=torch.float32).eval()
    net.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        expected = net(ids)
    torch.testing.assert_close(torch.tensor(by_text["outputs"]), expected, rtol=1e-6, atol=1e-5)   # float32

    r = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": ["good", [1, 2]]})
    assert r.status_code == 422 and "inputs[1] is list; send every row as text" in r.text


def test_the_word_language_example_is_admitted_on_words_as_its_readme_uploads_them(svc):
    """examples/jobs/word_language.json on a CSV of words (text_column word, max_length 20, byte ids)."""
    from pathlib import Path
    body = json.loads((Path(__file__).parents[2] / "examples" / "jobs" / "word_language.json").read_text())
    rows = [["butterfly", "english"], ["schmetterling", "german"], ["papillon", "french"]]
    content = ("word,language\n" + "".join(",".join(r) + "\n" for r in rows * 4)).encode()
    ds = svc.dataset(content, "words.csv", text_column="word", max_length="20")
    assert ds["input_shape"] == [20] and ds["tokenizer"]["pad_id"] == 256
    r = svc.submit(ds["id"], **body)
    assert r.status_code == 202, r.text
    block = 4 * 32 * 32 + 4 * 32 + 2 * 2 * 32 + 2 * 32 * 128 + 128 + 32
    assert r.json()["n_parameters"] == 257 * 32 + 20 * 32 + 2 * block + 2 * 32 + 33 * 3
