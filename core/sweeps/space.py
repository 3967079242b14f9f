"""The search space: each parameter as an Optuna distribution, and a point (one value per path)
written into the job template.

A path addresses any field of the job request: `optimizer.lr`, `model.layers.0.out_features`,
`loss.label_smoothing`. A field the user left at its default can be addressed too (`optimizer.lr`
when no optimizer was given): the missing object is written out from the template, with its own
defaults left for validation to fill. `*` addresses every element of a list that has the rest of
the path; for a choice only those whose current value is one of the choices, so
`model.layers.*.type: {"choice": ["relu", "tanh"]}` swaps every activation and leaves the
linear layers alone.

Choices go to Optuna by index (CategoricalDistribution over 0..n-1), so any JSON value can be a
choice (a whole layer list, an optimizer object) and two equal-looking values stay distinct.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import BaseModel

from .spec import JobTemplate, Parameter, SweepRequest

WILDCARD = "*"


class PathError(ValueError):
    """A path that does not address anything in the job; `path` names it."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


def distribution(parameter: Parameter) -> BaseDistribution:
    if parameter.choice is not None:
        return CategoricalDistribution(tuple(range(len(parameter.choice))))
    if parameter.int_uniform is not None:
        return IntDistribution(*parameter.int_uniform)
    low, high = parameter.uniform or parameter.log_uniform
    return FloatDistribution(low, high, log=parameter.log_uniform is not None)


def distributions(sweep: SweepRequest) -> dict[str, BaseDistribution]:
    return {path: distribution(p) for path, p in sweep.parameters.items()}


def user_value(parameter: Parameter, optuna_value: Any) -> Any:
    """Optuna's value of a parameter -> the value written into the job (a choice by its index)."""
    if parameter.choice is not None:
        return parameter.choice[int(optuna_value)]
    if parameter.int_uniform is not None:
        return int(optuna_value)
    return float(optuna_value)


def grid_size(sweep: SweepRequest) -> int:
    return math.prod(len(p.choice) for p in sweep.parameters.values())


def grid_points(sweep: SweepRequest) -> Iterator[dict[str, Any]]:
    """Every point of a grid (choices only), in the order of the parameters as given."""
    paths = list(sweep.parameters)
    for combination in itertools.product(*(sweep.parameters[p].choice for p in paths)):
        yield dict(zip(paths, combination))


def candidate_values(parameter: Parameter) -> list[Any]:
    """The values a parameter is checked with on its own: every choice, or both ends of a range."""
    if parameter.choice is not None:
        return list(parameter.choice)
    low, high = parameter.uniform or parameter.log_uniform or parameter.int_uniform
    return [low, high]


# ----------------------------------------------------------------------------- paths
def template_dict(template: JobTemplate) -> dict[str, Any]:
    """The job as the user wrote it (no defaults), which points are written into."""
    return template.model_dump(mode="json", exclude_unset=True, exclude={"dataset_id"})


def apply(template: JobTemplate, point: dict[str, Any], parameters: dict[str, Parameter]) -> dict[str, Any]:
    """The job request dict of `point` ({path: value}); raises PathError for a path that
    addresses nothing. The result still has to pass JobRequest validation."""
    job = template_dict(template)
    for path, value in point.items():
        choices = parameters[path].choice if path in parameters else None
        writer = _Writer(path, value, choices)
        if not writer.assign(job, template, 0):
            raise PathError(path, f"{path}: the '*' matches no element that has the rest of the path"
                            + (" with one of the choices as its value" if choices is not None else ""))
    return job


class _Writer:
    """Writes one value at one path; walks the job dict beside its validated model (for defaults)."""

    def __init__(self, path: str, value: Any, choices: list | None):
        self.path, self.value, self.choices = path, value, choices
        self.parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        self.wild = WILDCARD in self.parts

    def fail(self, depth: int, node: Any, problem: str) -> PathError:
        where = ".".join(str(p) for p in self.parts[:depth]) or "the job"
        return PathError(self.path, f"{self.path}: {where} is {_describe(node)}{problem}")

    def assign(self, node: Any, model: Any, depth: int) -> int:
        """How many places below `node` (whose validated counterpart is `model`) got the value."""
        key = self.parts[depth]
        if key == WILDCARD:
            if not isinstance(node, list):
                raise self.fail(depth, node, ", not a list, so '*' matches nothing")
            return sum(self.descend(node, model, i, depth) for i in range(len(node)))
        if isinstance(key, int):
            if not isinstance(node, list):
                raise self.fail(depth, node, f", not a list, so it has no index {key}")
            if key >= len(node):
                raise self.fail(depth, node, f" (indices 0-{len(node) - 1}); there is no index {key}")
            return self.descend(node, model, key, depth)
        if not isinstance(node, dict):
            raise self.fail(depth, node, f", which has no field {key!r}")
        if key not in node and depth + 1 < len(self.parts):
            child_model = getattr(model, key, None) if isinstance(model, BaseModel) else None
            if child_model is None:
                raise self.fail(depth, node, f" with no field {key!r}"
                                + (f"; its fields: {', '.join(sorted(node))}" if node else ""))
            node[key] = _written_out(child_model)
        return self.descend(node, model, key, depth)

    def descend(self, node: Any, model: Any, key: Any, depth: int) -> int:
        if depth + 1 == len(self.parts):
            if self.wild and not self._matches(node, key):
                return 0
            node[key] = copy.deepcopy(self.value)   # an unknown field is rejected by validation, at this path
            return 1
        child = node[key]
        if self.wild and not _has(child, self.parts[depth + 1:]):
            return 0
        return self.assign(child, _child(model, key), depth + 1)

    def _matches(self, node: Any, key: Any) -> bool:
        """Below a wildcard, only fields that exist, and for a choice hold one of its values."""
        if isinstance(node, dict) and key not in node:
            return False
        return self.choices is None or any(_same(node[key], c) for c in self.choices)


def _has(node: Any, rest: list) -> bool:
    """Whether the job dict has the path `rest` below `node` (for a wildcard to match it)."""
    for key in rest:
        if key == WILDCARD:
            return isinstance(node, list)
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                return False
        elif not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _child(model: Any, key: Any) -> Any:
    if isinstance(key, int):
        return model[key] if isinstance(model, (list, tuple)) and key < len(model) else None
    return getattr(model, key, None) if isinstance(model, BaseModel) else None


def _written_out(model: Any) -> Any:
    """A default object written into the job: only what differs from its defaults (and its type)."""
    if isinstance(model, BaseModel):
        out = model.model_dump(mode="json", exclude_defaults=True)
        if "type" in type(model).model_fields:
            out["type"] = getattr(model, "type")
        return out
    return copy.deepcopy(model)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                            and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def _describe(node: Any) -> str:
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return f"a list of {len(node)}"
    return f"the value {node!r}"


@dataclass(frozen=True)
class Point:
    """A trial's place in the space: the user's values, and Optuna's (choices by index)."""
    params: dict[str, Any]
    optuna_params: dict[str, Any]
    system_attrs: dict[str, Any]
