"""Admission of a sweep: before anything is stored, every parameter is written into the job at its
path and each resulting job goes through the same checks as POST /v1/jobs (core.admission).

Checked: each parameter alone at each of its values (every choice, both ends of a range), so a
failure names the one path at fault; then every grid point, or for random and TPE the corners
of the space and a seeded sample of it, for values that only clash together. Each failure is a
Rejection whose loc is ["body", "parameters", path] (or ["body", "parameters"] for a clash).
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from pydantic import ValidationError

from core.admission import Rejection, admit
from core.jobspec import JobRequest
from core.settings import Settings
from core.sweeps import SweepRequest, space
from core.sweeps.spec import TASK_METRICS
from core.tables import Dataset
from engine import SpecError

RANDOM_SAMPLE = 16   # random points checked for random and TPE, beside the corners


def admit_sweep(req: SweepRequest, dataset: Dataset, settings: Settings) -> int:
    """The sweep's number of trials if it can run on `dataset` within the limits; raises Rejection."""
    _check_metric(req, dataset)
    if req.max_concurrent > settings.max_concurrent_jobs:
        raise Rejection(422, ["body", "max_concurrent"], f"max_concurrent {req.max_concurrent} exceeds the "
                        f"{settings.max_concurrent_jobs} jobs a key may have queued or running at once")
    rule = req.early_stopping
    if rule.type == "asha" and rule.min_resource > req.job.epochs:
        raise Rejection(422, ["body", "early_stopping", "min_resource"], f"min_resource {rule.min_resource} is "
                        f"more than the job's {req.job.epochs} epochs: no trial would ever reach a rung")
    max_trials = _max_trials(req, settings)
    for path, parameter in req.parameters.items():
        for value in space.candidate_values(parameter):
            problem = _problem(req, dataset, settings, {path: value})
            if problem:
                raise Rejection(422, ["body", "parameters", path], f"{path} = {value!r}: {problem}")
    points = space.grid_points(req) if req.method == "grid" else _sample(req)
    for point in points:
        problem = _problem(req, dataset, settings, point)
        if problem:
            values = ", ".join(f"{path} = {value!r}" for path, value in point.items())
            raise Rejection(422, ["body", "parameters"], f"the point {values} makes an invalid job: {problem}")
    return max_trials


def _check_metric(req: SweepRequest, dataset: Dataset) -> None:
    valid = TASK_METRICS[dataset.task]
    if req.metric not in valid:
        raise Rejection(422, ["body", "metric"], f"metric {req.metric!r} is not reported for a {dataset.task} "
                        f"dataset; valid: {', '.join(valid)}")
    if req.metric.startswith("val_") and req.job.validation_split == 0:
        raise Rejection(422, ["body", "metric"], f"metric {req.metric} needs a validation set, but the job's "
                        "validation_split is 0; set it above 0 or use a train_ metric")


def _max_trials(req: SweepRequest, settings: Settings) -> int:
    limit = settings.max_sweep_trials
    if req.method == "grid":
        for path, parameter in req.parameters.items():
            if parameter.choice is None:
                raise Rejection(422, ["body", "parameters", path], f"{path}: a grid needs a finite set of values; "
                                f"give it as a choice, or search with method random or tpe")
        size = space.grid_size(req)
        if size > limit:
            sizes = " × ".join(str(len(p.choice)) for p in req.parameters.values())
            raise Rejection(422, ["body", "parameters"], f"the grid has {sizes} = {size:,} points; the limit is "
                            f"{limit:,} trials per sweep: drop values, or search with method random or tpe",
                            "limit_exceeded")
        if req.max_trials is not None and req.max_trials > size:
            raise Rejection(422, ["body", "max_trials"], f"max_trials {req.max_trials} is more than the grid's "
                            f"{size} points; leave it out to run each point once")
        return req.max_trials or size
    if req.max_trials is None:
        raise Rejection(422, ["body", "max_trials"], f"method {req.method} needs max_trials: how many trials to run")
    if req.max_trials > limit:
        raise Rejection(422, ["body", "max_trials"], f"max_trials {req.max_trials} exceeds the limit of {limit:,} "
                        "trials per sweep", "limit_exceeded")
    return req.max_trials


def _problem(req: SweepRequest, dataset: Dataset, settings: Settings, point: dict[str, Any]) -> str | None:
    """Why the job at `point` would be refused, or None. A path that addresses nothing raises
    Rejection at once: no value can fix it."""
    try:
        job = space.apply(req.job, point, req.parameters)
    except space.PathError as e:
        raise Rejection(422, ["body", "parameters", e.path], str(e)) from None
    try:
        admit(JobRequest.model_validate({**job, "dataset_id": dataset.id}), dataset, settings)
    except ValidationError as e:
        return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:3])
    except SpecError as e:
        return str(e)
    except Rejection as e:
        return e.message
    return None


def _sample(req: SweepRequest) -> list[dict[str, Any]]:
    """For random and TPE: the corners of the space (each range at both ends, choices in turn),
    then RANDOM_SAMPLE points drawn with the sweep's seed."""
    paths = list(req.parameters)
    ends = [space.candidate_values(req.parameters[p]) for p in paths]
    width = max(len(values) for values in ends)
    corners = [{p: values[i % len(values)] for p, values in zip(paths, ends)} for i in range(width)]
    if len(paths) > 1:
        corners += [dict(zip(paths, combination)) for combination in itertools.islice(itertools.product(*ends), 64)]
    rng = np.random.default_rng(req.seed)
    drawn = [{p: _draw(req.parameters[p], rng) for p in paths} for _ in range(RANDOM_SAMPLE)]
    return corners + drawn


def _draw(parameter, rng: np.random.Generator) -> Any:
    if parameter.choice is not None:
        return parameter.choice[int(rng.integers(len(parameter.choice)))]
    if parameter.int_uniform is not None:
        return int(rng.integers(parameter.int_uniform[0], parameter.int_uniform[1] + 1))
    if parameter.log_uniform is not None:
        low, high = np.log(parameter.log_uniform)
        return float(np.exp(rng.uniform(low, high)))
    return float(rng.uniform(*parameter.uniform))
