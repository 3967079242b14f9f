"""The pruning message states Optuna's own rule: an ASHA trial is stopped exactly when its value
at the rung is worse than the threshold the message names."""
from __future__ import annotations

import numpy as np
import pytest

from core.sweeps import SweepRequest
from core.sweeps import study as optuna_study
from core.sweeps.pruning import asha_rung, explain
from core.sweeps.study import TrialRecord

DATASET_ID = "3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10"   # any id: these tests build specs only


@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_asha_stops_a_trial_exactly_when_it_misses_the_threshold_it_names(goal):
    sweep = SweepRequest.model_validate({
        "name": "s", "dataset_id": DATASET_ID, "method": "random", "max_trials": 40, "goal": goal,
        "job": {"model": {"layers": [{"type": "linear", "out_features": 3}]}, "loss": "cross_entropy",
                "epochs": 27},
        "parameters": {"optimizer.lr": {"log_uniform": [1e-4, 1.0]}},
        "early_stopping": {"type": "asha", "min_resource": 1, "reduction_factor": 3}})
    rng = np.random.default_rng(0)
    records: list[TrialRecord] = []
    stopped = kept = 0
    for number in range(40):                     # each trial reaches epoch 1 in turn
        point = optuna_study.next_point(sweep, records)
        value = float(rng.uniform())
        records.append(TrialRecord(number, point.optuna_params, point.system_attrs, {1: value}, None,
                                   "running", None))
        decision = optuna_study.should_prune(sweep, records, number)
        records[number] = TrialRecord(number, point.optuna_params, decision.system_attrs, {1: value}, None,
                                      "running", None)
        rung = asha_rung(sweep.early_stopping, goal, records, number, value)
        worse = value > rung.threshold if goal == "minimize" else value < rung.threshold
        assert decision.prune == worse, (number, value, rung)
        assert rung.reached == number + 1 and rung.keep == max((number + 1) // 3, 1)
        if decision.prune:
            assert explain(sweep, records, number, 1, value).endswith(
                f"is not in the best {rung.keep} of the {number + 1} trials that reached epoch 1 "
                f"(needed at {'most' if goal == 'minimize' else 'least'} {rung.threshold:.6g})")
        assert decision.system_attrs["completed_rung_0"] == value
        stopped, kept = stopped + decision.prune, kept + (not decision.prune)
    assert stopped > 20 and kept > 5            # about 2 in 3 stop at reduction factor 3
