"""Predict rows against the CSV columns the model was trained on.

A user who predicts from a copy of the training CSV often leaves the target column in it: the rows
are then one value too wide. With the file's header (`columns`) the extra column is named outright,
and the rows are put into the training order by name; without one, a table row one value too wide
names the dataset's target as the likely extra. Either way the message lists the expected columns.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from core.tables import TABLE, Dataset

from .predict import InputError

LISTED = 20      # feature names quoted in a message before "... (N in all)"


class ColumnsError(InputError):
    """The request's columns do not name the dataset's feature columns."""


def feature_rows(inputs: list[Any], columns: list[str] | None, dataset: Dataset | None) -> list[Any]:
    """The rows the model takes: by name when columns are given, else as sent once their width is checked."""
    if columns is not None:
        return by_name(inputs, columns, dataset)
    check_width(inputs, dataset)
    return inputs


def listing(names: list[str]) -> str:
    """['a', 'b', ...] for a message: the first LISTED names, then how many there are in all."""
    shown = ", ".join(repr(n) for n in names[:LISTED])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > LISTED else ''}]"


def by_name(inputs: list[Any], columns: list[str], dataset: Dataset | None) -> list[list[Any]]:
    """Rows of len(columns) values -> rows of the dataset's feature columns in training order.

    ColumnsError names a repeated, unknown (the target by its role) or missing column, or a dataset
    without named feature columns (NPZ, text, or deleted); InputError a row of the wrong width."""
    if dataset is None:
        raise ColumnsError("columns: the job's dataset was deleted, so its column names are unknown; send the "
                           "feature values in the training order, without columns")
    features = table_features(dataset)
    if features is None:
        raise ColumnsError(f"columns: the job's dataset ({dataset.format}, input_shape {list(dataset.input_shape)}) "
                           "has no named feature columns; send rows without columns")
    repeated = sorted(name for name, n in Counter(columns).items() if n > 1)
    if repeated:
        raise ColumnsError(f"columns: {listing(repeated)} appear more than once")
    position = {name: k for k, name in enumerate(columns)}
    known = set(features)
    extra = [c for c in columns if c not in known]
    missing = [c for c in features if c not in position]
    if extra or missing:
        said = [_extra(extra, dataset.target)] * bool(extra) + [f"missing {listing(missing)}"] * bool(missing)
        raise ColumnsError(f"columns: {'; '.join(said)}; the model takes the dataset's {len(features)} feature "
                           f"columns {listing(features)}")
    for i, row in enumerate(inputs):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InputError(f"inputs[{i}] has {_count(row)}; columns names {len(columns)}")
    order = [position[name] for name in features]
    return [[row[k] for k in order] for row in inputs]


def check_width(inputs: list[Any], dataset: Dataset | None) -> None:
    """Table rows sent without columns: the first row of the wrong width, with the columns expected
    and, for one value too many, the dataset's target column as the likely extra."""
    features = table_features(dataset) if dataset is not None else None
    if features is None:
        return                                   # no names to tell: the shape check speaks
    for i, row in enumerate(inputs):
        if isinstance(row, list) and len(row) != len(features):
            guess = (f"; one value too many: is the target column {dataset.target!r} still in the row? "
                     "Predict takes the feature columns only" if len(row) == len(features) + 1 and dataset.target
                     else "")
            raise InputError(f"inputs[{i}] has {_count(row)}; the model takes the dataset's {len(features)} feature "
                             f"columns {listing(features)}, in that order{guess} (or send the CSV header as "
                             "columns, and rows are matched by name)")


def table_features(dataset: Dataset) -> list[str] | None:
    """A numeric table's feature column names, one per input value; None for images, ids and NPZ."""
    names = dataset.feature_names
    if dataset.kind != TABLE or not names or list(dataset.input_shape) != [len(names)]:
        return None
    return list(names)


def _extra(extra: list[str], target: str | None) -> str:
    others = [c for c in extra if c != target]
    said = [f"{target!r} is the dataset's target column (what the model predicts), not an input"] * (target in extra)
    said += [f"{listing(others)} {'is' if len(others) == 1 else 'are'} not among its feature columns"] * bool(others)
    return "; ".join(said)


def _count(row: Any) -> str:
    return f"{len(row)} value{'s' if len(row) != 1 else ''}" if isinstance(row, list) else f"a {type(row).__name__}"
