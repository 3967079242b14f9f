"""The examples stay runnable: each examples/*.json is admitted as a sweep on the digits CSV that
examples/make_datasets.py writes (every grid point, or a sample of the space, checked as a job)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def make_datasets():
    spec = importlib.util.spec_from_file_location("make_datasets", EXAMPLES / "make_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def digits(svc, tmp_path) -> dict:
    path = make_datasets().digits_csv(tmp_path / "digits.csv")
    dataset = svc.dataset(path.read_bytes(), "digits.csv", name="digits")
    assert dataset["n_rows"] == 1797 and dataset["input_shape"] == [64] and len(dataset["classes"]) == 10
    return dataset


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_each_example_is_admitted(svc, digits, example):
    body = {**json.loads((EXAMPLES / example).read_text()), "dataset_id": digits["id"]}
    r = svc.client.post("/v1/sweeps", headers=svc.a, json=body)
    assert r.status_code == 202, r.text
    sweep = r.json()
    assert sweep["counts"]["made"] == min(body["max_concurrent"], sweep["max_trials"])
    svc.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=svc.a)
