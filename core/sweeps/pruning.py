"""A running trial's epoch, told to the sweep: its metric is recorded on the trial row, and the
sweep's pruner (Optuna's, core.sweeps.study) says whether the trial stops here.

The worker calls `TrialReporter.report` at each epoch end (worker.trial). A trial told to stop ends
`cancelled` with error_code `pruned` and the message from `explain`, which names the rung, the
metric's value and the value it had to beat. The decision is stored (pruned_epoch) before the
worker acts on it, so a trial whose worker dies right after is stopped as pruned on resume.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from optuna.trial import TrialState
from sqlalchemy import select, update

from ..db import session_scope
from ..settings import Settings
from ..tables import Sweep, SweepTrial
from . import store, study
from .spec import AshaPruning, MedianPruning, SweepRequest
from .study import TrialRecord

RUNG_KEY = "completed_rung_"   # Optuna's SuccessiveHalvingPruner: a trial's value at rung k, per trial


class TrialReporter:
    """A running trial's side of its sweep, for one attempt: reads the trial row and the sweep
    once, then per epoch writes one UPDATE (and reads the other trials only when a pruner is
    to decide). `pruned` is the stop message once the pruner has said stop."""

    def __init__(self, settings: Settings, job_id: str):
        self.settings = settings
        with session_scope(settings.database_url) as s:
            self.trial = s.scalars(select(SweepTrial).where(SweepTrial.job_id == job_id)).one()
            self.spec = SweepRequest.model_validate(s.get(Sweep, self.trial.sweep_id).request)
        self.pruned: str | None = None
        if self.trial.pruned_epoch is not None:   # decided for an attempt whose worker was lost
            self.pruned = f"pruned at epoch {self.trial.pruned_epoch} (decided before its worker was lost)"

    def report(self, epoch: int, value: float | None, *, final: bool) -> str | None:
        """Record `value` (the sweep metric at `epoch`); the pruning message if the trial stops here.
        `final`: the trial's last epoch, recorded but never pruned (it has finished)."""
        trial, spec, value = self.trial, self.spec, store.finite(value)
        summary = {"last_epoch": epoch, "last_value": value}
        if value is not None and study.better(value, trial.best_value, spec.direction):
            summary |= {"best_epoch": epoch, "best_value": value}
        decision, records = None, []
        if not final and spec.early_stopping.type != "none":
            records, decision = self._decide(epoch, value, summary)
            summary |= {"system_attrs": decision.system_attrs} | ({"pruned_epoch": epoch} if decision.prune else {})
        with session_scope(self.settings.database_url) as s:   # one short write: SQLite's write lock is global
            s.execute(update(SweepTrial).where(SweepTrial.sweep_id == trial.sweep_id,
                                               SweepTrial.number == trial.number).values(**summary))
        for name, v in summary.items():
            setattr(trial, name, v)
        if decision is None or not decision.prune:
            return None
        self.pruned = explain(spec, records, trial.number, epoch, value)
        return self.pruned

    def _decide(self, epoch: int, value: float | None, summary: dict) -> tuple[list[TrialRecord], study.PruneDecision]:
        trial, spec = self.trial, self.spec
        with session_scope(self.settings.database_url) as s:
            at_epoch = epoch if spec.early_stopping.type == "median" else None
            records = store.load_records(s, trial.sweep_id, metric=spec.metric, at_epoch=at_epoch)
        own = {**store.known_values(trial), epoch: value}   # the previous last epoch stays: the median's interval
        records[trial.number] = dataclasses.replace(records[trial.number], values=own,
                                                    best=summary.get("best_value", trial.best_value))
        decision = study.should_prune(spec, records, trial.number)
        records[trial.number] = dataclasses.replace(records[trial.number], system_attrs=decision.system_attrs)
        return records, decision


def explain(spec: SweepRequest, records: list[TrialRecord], number: int, epoch: int, value: float | None) -> str:
    """Why the pruner stopped trial `number` at `epoch`, in the sweep's terms."""
    metric, rule = spec.metric, spec.early_stopping
    if value is None:
        return f"pruned at epoch {epoch}: {metric} is not a finite number"
    better = "at most" if spec.direction == "minimize" else "at least"
    if isinstance(rule, AshaPruning):
        return _explain_asha(rule, spec, records, number, epoch, value, better)
    assert isinstance(rule, MedianPruning)
    finished = [r.values[epoch] for r in records if r.state == TrialState.COMPLETE
                and r.values.get(epoch) is not None]
    best_so_far = records[number].best if records[number].best is not None else math.nan
    median = float(np.median(finished)) if finished else math.nan
    return (f"pruned at epoch {epoch} by the median rule: best {metric} so far {best_so_far:.6g} is worse "
            f"than {median:.6g}, the median of the {len(finished)} finished trials at epoch {epoch} "
            f"(needed {better} that)")


@dataclasses.dataclass(frozen=True)
class Rung:
    """Where an ASHA trial stood at its last rung: Optuna's rule restated for the message."""
    number: int            # k: the rung at epoch min_resource × reduction_factor^(min_early_stopping_rate + k)
    reached: int           # trials with a value at this rung, this one included
    keep: int              # how many of them go on: the best 1/reduction_factor, at least 1
    threshold: float       # the value a trial had to match or beat to go on


def asha_rung(rule: AshaPruning, direction: str, records: list[TrialRecord], number: int, value: float) -> Rung:
    rungs = [int(key[len(RUNG_KEY):]) for key in records[number].system_attrs if key.startswith(RUNG_KEY)]
    rung = max(rungs, default=0)   # the rung this epoch completed: the trial's last one
    key = f"{RUNG_KEY}{rung}"
    competing = sorted([r.system_attrs[key] for r in records if r.number != number and key in r.system_attrs]
                       + [value])
    keep = max(len(competing) // rule.reduction_factor, 1)
    threshold = competing[keep - 1] if direction == "minimize" else competing[-keep]
    return Rung(rung, len(competing), keep, threshold)


def _explain_asha(rule: AshaPruning, spec: SweepRequest, records: list[TrialRecord], number: int, epoch: int,
                  value: float, better: str) -> str:
    rung = asha_rung(rule, spec.direction, records, number, value)
    return (f"pruned by ASHA at epoch {epoch} (rung {rung.number}): {spec.metric} {value:.6g} is not in the best "
            f"{rung.keep} of the {rung.reached} trials that reached epoch {epoch} (needed {better} "
            f"{rung.threshold:.6g})")
