"""Hyperparameter sweeps: a job template, a space of values for some of its fields, a search
method and a pruner; every trial is a job, trained by the ordinary workers.

    POST /v1/sweeps ─▶ sweep row (running) ─▶ scheduler.fill ─▶ trial jobs (core.lifecycle.submit)
                                                   ▲                   │ worker, each epoch
               a trial ended (worker) ─────────────┤                   ▼
               core.reconciler's pass (any process) ──┘        pruning.report ─▶ stop here? (cancelled, pruned)

Modules: spec (the request, validated), space (parameters as Optuna distributions, a point
written into the job by dotted path), study (Optuna's samplers and pruners on a study rebuilt in
memory from our rows), store (reading the trials), scheduler (making trials under the sweep row's
lock, ending and cancelling sweeps), pruning (a trial's epoch reported; the pruner's decision).

Where Optuna's state lives: beside it, in our own tables. Optuna's RDBStorage would keep it in
tables made by Optuna's own Alembic history (and its own alembic_version table), which our rule
"migrations make our schema" cannot own; it would need a second SQLite file under the data dir
in the embedded mode and a second PostgreSQL schema in production, each upgraded by Optuna. Our
trial rows (SweepTrial) already hold what Optuna needs: each trial's point (Optuna's encoding),
its system attributes (the grid point it was given, the ASHA rungs it completed) and its metric
per epoch; the job's status gives the trial's state. Each decision rebuilds an in-memory study
from them with `study.add_trials` (milliseconds for hundreds of trials) and asks Optuna.
"""
from .spec import SweepRequest, SweepStatus

__all__ = ["SweepRequest", "SweepStatus"]
