"""Sweeps end to end through HTTP, with real `chainrule api` and `chainrule worker` processes: the
trials are jobs the workers train, the pruner stops them at epoch boundaries, and the sweep
survives a SIGKILLed worker and a restarted API.

Data sets that ship with scikit-learn, standardized: wine (178 rows, 13 features, 3 classes) for
the quick sweeps, digits (1797 rows, 64 features, 10 classes) for ASHA, where its 540 validation
rows make val_loss steady enough to rank trials by.
"""
from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import time
from datetime import datetime

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_wine

from e2e_support import CEILING_S, HANG_GUARD_S, Stack, chainrule_cmd, wait_for

pytestmark = pytest.mark.timeout(HANG_GUARD_S)

RUNGS = {1, 3, 9}            # ASHA with min_resource 1, reduction factor 3, 27 epochs: rungs below the last
ASHA_MARGIN = 0.10           # ASHA's best val_loss is within 10 % of the full grid's best


def csv_of(loader) -> bytes:
    X, y = loader(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    out = io.StringIO()
    out.write(",".join([f"x{i}" for i in range(X.shape[1])] + ["label"]) + "\n")
    for row, label in zip(X, y):
        out.write(",".join(f"{v:.4f}" for v in row) + f",{label}\n")
    return out.getvalue().encode()


def mlp(hidden: int, classes: int) -> dict:
    return {"layers": [{"type": "linear", "out_features": hidden}, {"type": "relu"},
                       {"type": "linear", "out_features": classes}]}


def submit(stack: Stack, **sweep) -> dict:
    r = stack.http.post("/v1/sweeps", json=sweep)
    assert r.status_code == 202, r.text
    return r.json()


def wait_sweep(stack: Stack, sweep_id: str, timeout: float = CEILING_S, watch=("api",)) -> dict:
    def done():
        for name in watch:
            stack.check_alive(name)
        sweep = stack.http.get(f"/v1/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] != "running" else None
    return wait_for(done, timeout, 0.2, f"sweep {sweep_id} to end")


def max_overlap(trials: list[dict]) -> int:
    """The most trials running at once, from their start and end times."""
    events = []
    for t in trials:
        if t["started_at"]:
            events += [(datetime.fromisoformat(t["started_at"]), 1), (datetime.fromisoformat(t["finished_at"]), -1)]
    running = most = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):   # an end before a start at the same instant
        running += step
        most = max(most, running)
    return most


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    """One embedded deployment (SQLite, the server-less broker) with two workers, for the sweeps
    that kill nothing; its logs are printed if a test in this module failed."""
    failed_before = request.session.testsfailed
    deployment = Stack(tmp_path_factory.mktemp("sweeps"))
    try:
        yield deployment.up(workers=2)
    finally:
        deployment.close()
        if request.session.testsfailed > failed_before:
            print(deployment.dump_logs())


@pytest.fixture(scope="module")
def wine(stack) -> str:
    return stack.upload_csv(csv_of(load_wine), "wine")["id"]


def lr_grid(dataset_id: str, **overrides) -> dict:
    """6 trials: 3 learning rates × 2 batch sizes that both hold all 124 training rows, so each
    pair of trials trains identically: a tie the best trial must break by its number."""
    return {"name": "lr grid", "dataset_id": dataset_id, "method": "grid", "max_concurrent": 1, "seed": 3,
            "job": {"model": mlp(8, 3), "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1},
                    "epochs": 12, "validation_split": 0.3, "device": "cpu"},
            "parameters": {"optimizer.lr": {"choice": [0.003, 0.03, 0.3]}, "batch_size": {"choice": [256, 512]}},
            **overrides}


def test_grid_over_lr_trains_every_point_and_its_best_is_the_tables(stack, wine):
    sweep = wait_sweep(stack, submit(stack, **lr_grid(wine))["id"])
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 6
    trials = sweep["trials"]
    assert sorted((t["params"]["optimizer.lr"], t["params"]["batch_size"]) for t in trials) == \
        sorted((lr, bs) for lr in (0.003, 0.03, 0.3) for bs in (256, 512))
    assert max_overlap(trials) == 1          # max_concurrent 1, although two workers were free
    table = {}                               # the trial's best val_loss, read from its job's own metrics
    for t in trials:
        epochs = stack.http.get(f"/v1/jobs/{t['job_id']}/metrics").json()["epochs"]
        assert [m["epoch"] for m in epochs] == list(range(1, 13)) and t["epochs"] == 12
        table[t["number"]] = min(m["val_loss"] for m in epochs)
        assert t["value"] == table[t["number"]]
    best = min(table, key=lambda n: (table[n], n))
    assert sweep["best_trial"]["number"] == best and sweep["best_trial"]["value"] == table[best]
    partner = [t for t in trials if t["params"]["optimizer.lr"] == trials[best]["params"]["optimizer.lr"]
               and t["number"] != best][0]
    assert table[partner["number"]] == table[best] and partner["number"] > best   # a tie, broken by number
    assert sweep["epochs_trained"] == sweep["epochs_without_pruning"] == 72

    again = wait_sweep(stack, submit(stack, **lr_grid(wine))["id"])    # the same seed: the same trials
    assert [(t["params"], t["value"]) for t in again["trials"]] == [(t["params"], t["value"]) for t in trials]
    listed = stack.http.get(f"/v1/jobs?sweep={again['id']}").json()
    assert listed["total"] == 6 and {j["sweep_id"] for j in listed["items"]} == {again["id"]}


def test_random_search_with_a_seed_draws_the_same_trials(stack, wine):
    def draws(seed: int) -> list[dict]:
        sweep = submit(stack, **lr_grid(wine, method="random", max_trials=3, max_concurrent=3, seed=seed,
                                        parameters={"optimizer.lr": {"log_uniform": [1e-3, 1.0]},
                                                    "model.layers.0.out_features": {"int_uniform": [2, 64]}}))
        return [t["params"] for t in wait_sweep(stack, sweep["id"])["trials"]]
    first = draws(7)
    assert draws(7) == first and draws(8) != first
    assert all(1e-3 <= p["optimizer.lr"] <= 1.0 and 2 <= p["model.layers.0.out_features"] <= 64 for p in first)


def asha_grid(dataset_id: str, early_stopping) -> dict:
    """27 trials of up to 27 epochs: lr × momentum × width."""
    return {"name": "asha", "dataset_id": dataset_id, "method": "grid", "max_concurrent": 2, "seed": 0,
            "job": {"model": mlp(16, 10), "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.1},
                    "epochs": 27, "batch_size": 32, "validation_split": 0.3, "device": "cpu"},
            "parameters": {"optimizer.lr": {"choice": [0.001, 0.01, 0.1]},
                           "optimizer.momentum": {"choice": [0.0, 0.5, 0.9]},
                           "model.layers.0.out_features": {"choice": [2, 8, 32]}},
            "early_stopping": early_stopping}


def check_asha(deployment: Stack, *, against_full_grid: bool) -> None:
    digits = deployment.upload_csv(csv_of(load_digits), "digits")["id"]
    asha = wait_sweep(deployment, submit(deployment, **asha_grid(digits, {
        "type": "asha", "min_resource": 1, "reduction_factor": 3}))["id"])
    assert asha["status"] == "succeeded" and asha["counts"]["made"] == 27
    print(f"\n[measured] ASHA trained {asha['epochs_trained']} epochs of 729 ({asha['counts']['pruned']} of 27 "
          f"pruned); best val_loss {asha['best_trial']['value']:.4f}")
    assert asha["epochs_trained"] < 0.4 * 27 * 27                      # well under half
    if against_full_grid:
        full = wait_sweep(deployment, submit(deployment, **asha_grid(digits, "none"))["id"])
        assert full["counts"]["succeeded"] == 27 and full["epochs_trained"] == 27 * 27
        print(f"[measured] the full grid's best val_loss {full['best_trial']['value']:.4f}")
        assert asha["best_trial"]["value"] <= full["best_trial"]["value"] * (1 + ASHA_MARGIN)
        assert max_overlap(full["trials"]) <= 2
    pruned = [t for t in asha["trials"] if t["pruned"]]
    assert len(pruned) >= 18
    for t in pruned:            # stopped at a rung, cancelled with the reason, its epochs' metrics kept
        assert t["status"] == "cancelled" and t["error"]["code"] == "pruned", t
        kept = [m["epoch"] for m in deployment.http.get(f"/v1/jobs/{t['job_id']}/metrics").json()["epochs"]]
        lost = re.fullmatch(r"pruned at epoch (\d+) \(decided before its worker was lost\)", t["error"]["message"])
        if lost:    # a loaded machine: the worker that reached the rung missed its heartbeats; the next
            # attempt resumed from the last checkpoint (at or before the rung) and stopped there
            assert int(lost[1]) in RUNGS and t["epochs"] <= int(lost[1]), t
            assert deployment.http.get(f"/v1/jobs/{t['job_id']}").json()["attempts"] > 1, t
            assert kept == list(range(1, len(kept) + 1)) and len(kept) >= t["epochs"], (t, kept)
            continue
        assert t["epochs"] in RUNGS and f"at epoch {t['epochs']} (rung" in t["error"]["message"], t
        assert kept == list(range(1, t["epochs"] + 1))
    assert max_overlap(asha["trials"]) <= 2


def check_median(deployment: Stack, dataset_id: str) -> None:
    """One trial at a time, so the finished trials each decision saw are the earlier ones: every
    trial's fate is recomputed from the jobs' metrics with the median rule, maximizing accuracy."""
    sweep = wait_sweep(deployment, submit(deployment, **lr_grid(
        dataset_id, method="random", max_trials=8, seed=1, metric="val_accuracy",
        parameters={"optimizer.lr": {"log_uniform": [1e-3, 3.0]}},
        early_stopping={"type": "median", "startup_trials": 2, "warmup_epochs": 2}))["id"])
    assert sweep["goal"] == "maximize"
    curves: dict[int, list[float]] = {}
    for t in sweep["trials"]:
        epochs = deployment.http.get(f"/v1/jobs/{t['job_id']}/metrics").json()["epochs"]
        curves[t["number"]] = [m["val_accuracy"] for m in epochs]
        assert t["value"] == max(curves[t["number"]])
        finished = [n for n in curves if n < t["number"] and sweep["trials"][n]["status"] == "succeeded"]
        expected = None              # the first epoch at which the rule stops this trial, if any
        for epoch in range(2, 12) if len(finished) >= 2 else ():
            median = float(np.median([curves[n][epoch - 1] for n in finished]))
            if max(curves[t["number"]][:epoch]) < median:
                expected = epoch
                break
        if expected is None:
            assert t["status"] == "succeeded" and t["epochs"] == 12, t
        else:
            assert t["pruned"] and t["epochs"] == expected, (t, expected)
            assert t["error"]["message"].startswith(f"pruned at epoch {expected} by the median rule")
    assert sweep["counts"]["pruned"] >= 1


def test_asha_prunes_at_rungs_and_finds_the_full_grids_best(stack):
    check_asha(stack, against_full_grid=True)


def test_median_rule_stops_trials_below_the_finished_trials_median(stack, wine):
    check_median(stack, wine)


@pytest.mark.postgres
@pytest.mark.redis
def test_asha_and_median_on_postgres_and_redis_with_two_workers(stack_factory):
    deployment = stack_factory("postgres").up(workers=2)
    check_asha(deployment, against_full_grid=False)   # the comparison is the same search on SQLite, above
    check_median(deployment, deployment.upload_csv(csv_of(load_wine), "wine")["id"])


def test_cancel_stops_every_trial_and_no_trial_is_made_after_it(stack, wine):
    sweep = submit(stack, **lr_grid(wine, max_concurrent=2, job={
        "model": mlp(8, 3), "loss": "cross_entropy", "epochs": 20_000, "device": "cpu"}))

    def both_running():
        trials = stack.http.get(f"/v1/jobs?sweep={sweep['id']}&status=running").json()["items"]
        return len(trials) == 2 and all(t["progress"]["epoch"] >= 1 for t in trials)
    wait_for(both_running, CEILING_S, 0.1, "two trials to be training")
    t0 = time.monotonic()
    assert stack.http.post(f"/v1/sweeps/{sweep['id']}/cancel").json()["status"] == "cancelled"

    def all_stopped():
        jobs = stack.http.get(f"/v1/jobs?sweep={sweep['id']}").json()["items"]
        return jobs if all(j["status"] not in ("queued", "running") for j in jobs) else None
    jobs = wait_for(all_stopped, CEILING_S, 0.05, "every trial to stop")
    took = time.monotonic() - t0          # a latency, printed: a loaded machine stretches it (bench/, not here)
    print(f"\n[measured] every trial of the sweep stopped {took:.2f} s after POST /cancel")
    assert len(jobs) == 2 and all(j["status"] == "cancelled" and j["error"] is None for j in jobs)
    stack.wait_sweeps("worker", 2)        # two reconciler passes: no trial is made after a cancel
    final = stack.http.get(f"/v1/sweeps/{sweep['id']}").json()
    assert final["status"] == "cancelled" and final["counts"]["made"] == 2 and final["counts"]["cancelled"] == 2


def test_a_sigkilled_worker_and_a_restarted_api_leave_a_sweep_that_completes(stack_factory):
    deployment = stack_factory().up(workers=2)
    wine = deployment.upload_csv(csv_of(load_wine), "wine")["id"]
    sweep = submit(deployment, **lr_grid(wine, max_concurrent=2, parameters={
        "optimizer.lr": {"choice": [0.01, 0.1, 0.3]}}, job={
        "model": mlp(32, 3), "loss": "cross_entropy", "epochs": 120, "batch_size": 16, "device": "cpu"}))

    def both_checkpointed():
        trials = deployment.http.get(f"/v1/jobs?sweep={sweep['id']}&status=running").json()["items"]
        return len(trials) == 2 and all(t["progress"]["epoch"] >= 2 for t in trials)
    wait_for(both_checkpointed, CEILING_S, 0.05, "two trials past their first checkpoint")
    deployment.procs["worker2"].send_signal(signal.SIGKILL)   # one of the two running trials loses its worker
    deployment.procs["worker2"].wait()
    deployment.restart_api(signal.SIGKILL)                     # the sweep's state is only in the database

    done = wait_sweep(deployment, sweep["id"], watch=("api", "worker"))
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 3, done["counts"]
    jobs = deployment.http.get(f"/v1/jobs?sweep={sweep['id']}").json()["items"]
    resumed = [j for j in jobs if j["attempts"] == 2]
    assert len(resumed) == 1, [j["attempts"] for j in jobs]
    assert resumed[0]["result"]["resumed_from_epoch"] >= 1 and resumed[0]["result"]["epochs_completed"] == 120
    assert max_overlap(done["trials"]) <= 2


def test_the_cli_and_the_client_submit_and_follow_a_sweep(stack, wine):
    """`chainrule sweeps submit --watch` draws the trials as a table and exits 0 when the sweep
    succeeds; the Python client waits for one and lists its trials as jobs."""
    sweep_file = stack.root / "sweep.json"
    sweep_file.write_text(json.dumps(lr_grid(wine, name="cli grid", max_concurrent=2,
                                             parameters={"optimizer.lr": {"choice": [0.003, 0.3]}})))
    env = {**stack.env, "XDG_CONFIG_HOME": str(stack.root / "config")}
    run = subprocess.run(chainrule_cmd() + ["sweeps", "submit", str(sweep_file), "--watch", "--url", stack.api_url,
                                            "--key", stack.key], env=env, capture_output=True, text=True,
                         timeout=CEILING_S)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "submitted sweep" in run.stdout and "succeeded" in run.stdout and "optimizer.lr" in run.stdout
    sweep_id = run.stdout.split("submitted sweep ", 1)[1].split()[0]
    with stack.client() as client:
        sweep = client.wait_sweep(sweep_id, timeout=CEILING_S)
        assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 2
        assert f"{sweep['best_trial']['number']} *" in run.stdout            # the best trial is marked
        trials = client.list(sweep=sweep_id)
        assert trials["total"] == 2 and {j["id"] for j in trials["items"]} == {t["job_id"] for t in sweep["trials"]}
        made = client.submit_sweep(lr_grid(wine, name="client grid"), dataset_id=wine)
        assert made["status"] == "running" and made["name"] == "client grid"
        assert client.cancel_sweep(made["id"])["status"] == "cancelled"
        assert made["id"] in {s["id"] for s in client.list_sweeps()["items"]}
