"""bench/engine_vs_torch.py: both sides train the same thing (a correctness check, not a timing one)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[2] / "bench" / "engine_vs_torch.py"
_spec = importlib.util.spec_from_file_location("engine_vs_torch", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench            # dataclasses look their module up here
_spec.loader.exec_module(bench)

CASES = {c.name: c for c in bench.CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_both_sides_compute_the_same_losses(name):
    # float64, a small batch: the first step's loss, then two more after Adam updates
    pair = bench.build(CASES[name], "cpu", dtype=torch.float64, batch=4, n_batches=2)
    for step in range(3):
        with torch.no_grad():
            ours = pair.engine_step()
        ref = pair.torch_step()
        assert isinstance(ours, float) and isinstance(ref, float)
        assert abs(ours - ref) <= 1e-10 * max(1.0, abs(ref)), f"step {step}: engine {ours!r}, torch {ref!r}"
    ref_params = dict(pair.net.named_parameters())
    for k, p in pair.model.parameters().items():
        assert (p - ref_params[k].detach()).abs().max().item() <= 1e-10, k


def test_flops_count_skips_the_first_input_gradient():
    model = bench.build(CASES["MNIST MLP"], "cpu", batch=2, n_batches=1).model
    n = 64
    first, second = n * 784 * 128, n * 128 * 10          # multiply-adds of each linear
    assert bench.step_flops(model, n) == (2 + 2) * first + (2 + 4) * second
    cnn = bench.build(CASES["small CNN"], "cpu", batch=2, n_batches=1).model
    conv1 = n * 8 * 28 * 28 * 1 * 9
    conv2 = n * 16 * 14 * 14 * 8 * 9
    fc = n * 16 * 7 * 7 * 10
    assert bench.step_flops(cnn, n) == 4 * conv1 + 6 * conv2 + 6 * fc


def test_quick_run_prints_the_table_and_saves_json(tmp_path, capsys):
    out = bench.main(["--quick", "--models", "tiny MLP", "--rounds", "1", "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert "eng/torch" in text and "tiny MLP" in text and "torch.mm peak" in text
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved == json.loads(json.dumps(out))
    (r,) = saved["results"]
    assert r["model"] == "tiny MLP" and r["engine_steps_s"] > 0 and r["torch_steps_s"] > 0
    assert r["ratio"] == pytest.approx(r["engine_rounds"][0] / r["torch_rounds"][0])   # one round
    assert "step peak" in text and "forward + backward" in text and "batch-size sweep" in text
    memory = saved["memory"]["tiny MLP"]
    assert 0 < memory["engine"]["persistent"] <= memory["torch"]["persistent"] <= memory["torch"]["peak"]
    assert [row["layer"] for row in saved["layers"]] == ["linear", "conv2d", "batchnorm2d"]
    assert all(row["us"]["engine"] > 0 and row["us"]["torch"] > 0 for row in saved["layers"])
    assert [row["batch"] for row in saved["sweep"]] == [1, 4]
    from bench.compare_runs import compare                  # before / after tables from two such files
    table = compare([saved, saved])
    assert f"{r['ratio']:.2f}x" in next(line for line in table.splitlines() if line.startswith("tiny MLP"))


def test_tricks_section_times_every_trick_both_ways(tmp_path, capsys):
    out = bench.main(["--tricks", "--quick", "--threads", "1", "--models", "tiny MLP,small CNN",
                      "--json", str(tmp_path / "t.json")])
    text = capsys.readouterr().out
    rows = out["tricks"]
    assert json.loads((tmp_path / "t.json").read_text()) == json.loads(json.dumps(rows))
    tricks = {r["trick"] for r in rows}
    assert tricks == {"log-softmax switch", "channels-last max pool (forward)", "TrainStep under inference_mode",
                      "relu backward formula", "norm statistics (forward)", "leaky_relu backward formula",
                      "GELU backward formula", "conv dx", "avg pool dx", "avg pool 2x2 (forward)", "dx into the spent output (reuse_output)",
                      "Adam temporaries (reuse_grads)"}
    for r in rows:
        assert r["engine_us"] > 0 and r["other_us"] > 0 and r["engine_runs"] != r["other"]
        assert r["trick"] in text
    # the engine's choice follows its switches: the formula for > 64 rows of < 16 classes, channels-last
    # from 8 channels
    choice = {r["case"]: r["engine_runs"] for r in rows}
    assert choice["(64, 10) logits"] == "kernel" and choice["(128, 10) logits"] == "formula"
    assert choice["(128, 16) logits"] == choice["(1024, 100) logits"] == "kernel"
    assert choice["(64, 8, 28, 28) k2 s2 p0"] == "channels-last" and choice["(64, 3, 28, 28) k2 s2 p0"] == "plain"
