"""Optuna decides; our tables remember. Each decision (the next trial's point, whether a trial
stops at this epoch) rebuilds an in-memory Optuna study from the sweep's trial rows with
`study.add_trials`, asks Optuna, and hands back what to store.

Why not Optuna's RDBStorage: it makes its own tables with its own Alembic history (and its own
`alembic_version` table, which would collide with ours in one schema), while our rule is that
our migrations make our schema; keeping it beside ours would mean a second database file in the
embedded mode and a second schema in PostgreSQL, with their own upgrades and backups, for state
our trial rows already hold. A study of a few hundred trials rebuilds in milliseconds.

Reproducibility: the grid is shuffled by the sweep's seed and trial n gets the n-th point; the
random and TPE samplers get a seed made of (sweep seed, trial number), so trial n's draw does not
depend on which process made it. TPE's draws depend on the results it has seen, and so on the
order trials finish in when max_concurrent > 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from ..lifecycle import JobStatus
from . import space
from .space import Point
from .spec import SweepRequest

optuna.logging.set_verbosity(optuna.logging.WARNING)

TPE_MAX_STARTUP_TRIALS = 10   # Optuna's default: random draws before TPE models the results
PRUNED = "pruned"             # a pruned trial's job: cancelled, with this error_code


@dataclass(frozen=True)
class TrialRecord:
    """What a decision needs of one trial: its row's search state and its job's status."""
    number: int
    optuna_params: dict[str, Any]
    system_attrs: dict[str, Any]
    values: dict[int, float | None]     # epoch -> the sweep metric (None: not finite), the epochs Optuna reads
    best: float | None                  # the best finite value over all its epochs: the trial's value
    job_status: str | None              # None: the job was deleted
    error_code: str | None

    @property
    def state(self) -> TrialState:
        if self.job_status in (JobStatus.QUEUED, JobStatus.RUNNING):
            return TrialState.RUNNING
        if self.job_status == JobStatus.SUCCEEDED:
            return TrialState.COMPLETE
        if self.job_status == JobStatus.CANCELLED and self.error_code == PRUNED:
            return TrialState.PRUNED
        return TrialState.FAIL           # failed, cancelled by the user, deleted


def better(value: float, than: float | None, direction: str) -> bool:
    """Strictly better: on ties the earlier epoch (or trial) stays the best."""
    return than is None or (value < than if direction == "minimize" else value > than)


def _frozen(record: TrialRecord, dists: dict[str, BaseDistribution]) -> FrozenTrial:
    state = record.state
    value = record.best if state == TrialState.COMPLETE else None
    if state == TrialState.COMPLETE and value is None:
        state = TrialState.FAIL          # finished without one finite value: nothing to learn from
    return create_trial(state=state, value=value, params=record.optuna_params, distributions=dists,
                        system_attrs=record.system_attrs,
                        intermediate_values={e: (v if v is not None else math.nan) for e, v in record.values.items()})


def trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _sampler(sweep: SweepRequest, number: int) -> optuna.samplers.BaseSampler:
    if sweep.method == "grid":
        return optuna.samplers.GridSampler({path: list(range(len(p.choice))) for path, p in sweep.parameters.items()},
                                           seed=sweep.seed)
    if sweep.method == "random":
        return optuna.samplers.RandomSampler(seed=trial_seed(sweep.seed, number))
    startup = min(TPE_MAX_STARTUP_TRIALS, max(2, (sweep.max_trials or 0) // 3))
    return optuna.samplers.TPESampler(seed=trial_seed(sweep.seed, number), n_startup_trials=startup,
                                      constant_liar=True)   # running trials count, so parallel draws spread


def _pruner(sweep: SweepRequest) -> optuna.pruners.BasePruner:
    rule = sweep.early_stopping
    if rule.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=rule.min_resource, reduction_factor=rule.reduction_factor,
            min_early_stopping_rate=rule.min_early_stopping_rate, bootstrap_count=rule.bootstrap_count)
    if rule.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=rule.startup_trials, n_warmup_steps=rule.warmup_epochs,
                                           interval_steps=rule.interval_epochs, n_min_trials=rule.min_trials)
    return optuna.pruners.NopPruner()


def rebuild(sweep: SweepRequest, records: list[TrialRecord], number: int) -> optuna.Study:
    """The study as Optuna would hold it, trials in number order (numbers are contiguous)."""
    study = optuna.create_study(direction=sweep.direction, sampler=_sampler(sweep, number), pruner=_pruner(sweep))
    dists = space.distributions(sweep)
    study.add_trials([_frozen(r, dists) for r in sorted(records, key=lambda r: r.number)])
    return study


def next_point(sweep: SweepRequest, records: list[TrialRecord]) -> Point:
    """The point of trial number len(records)."""
    number = len(records)
    study = rebuild(sweep, records, number)
    trial = study.ask(space.distributions(sweep))
    params = {path: space.user_value(sweep.parameters[path], trial.params[path]) for path in sweep.parameters}
    attrs = study.get_trials(deepcopy=False)[number].system_attrs
    return Point(params=params, optuna_params=dict(trial.params), system_attrs=_plain(attrs))


@dataclass(frozen=True)
class PruneDecision:
    prune: bool
    system_attrs: dict[str, Any]


def should_prune(sweep: SweepRequest, records: list[TrialRecord], number: int) -> PruneDecision:
    """Optuna's pruner on trial `number` (running, its latest epoch in its values)."""
    study = rebuild(sweep, records, number)
    trial = study.trials[number]
    prune = study.pruner.prune(study, trial)
    attrs = study.get_trials(deepcopy=False)[number].system_attrs
    return PruneDecision(prune=bool(prune), system_attrs=_plain(attrs))


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe system attributes (Optuna keeps tuples and numpy numbers in some of them)."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v
    return plain(attrs)
