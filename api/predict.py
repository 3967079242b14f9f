"""Inference for finished jobs: JSON rows -> a checked array -> the engine's eval-mode forward on CPU.

Weights of a succeeded job never change, so each model is loaded once and kept in a
small LRU keyed by job id. Engine layers keep per-call caches in themselves, so one
model runs one forward at a time (a lock per model).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from core.jobspec import build_model
from engine import Model, format_shape
from engine.memory import estimate
from engine.text import Tokenizer

CACHE_SIZE = 4


class InputError(ValueError):
    """Predict inputs that do not fit the model; names the first bad row."""


def inputs_to_array(inputs: list[Any], input_shape: tuple[int, ...]) -> np.ndarray:
    """(n, *input_shape) float64 from nested lists of numbers; InputError names the first bad row."""
    try:
        arr = np.array(inputs)
    except (ValueError, TypeError, OverflowError):
        arr = None  # ragged: find the row below
    if arr is None or arr.dtype.kind not in "iuf" or arr.shape[1:] != tuple(input_shape):
        expected = format_shape(input_shape, batch=False)
        for i, row in enumerate(inputs):
            try:
                r = np.array(row)
            except (ValueError, TypeError, OverflowError):
                raise InputError(f"inputs[{i}] is ragged; each row must have shape {expected}, the "
                                 "dataset's input_shape") from None
            if r.dtype.kind not in "iuf":
                raise InputError(f"inputs[{i}] holds non-numbers ({r.dtype.name} values); rows must be "
                                 f"numbers shaped {expected}")
            if r.shape != tuple(input_shape):
                raise InputError(f"inputs[{i}] has shape {format_shape(r.shape, batch=False)}; expected "
                                 f"{expected}, the dataset's input_shape")
        raise InputError(f"inputs must be rows shaped {expected}")  # pragma: no cover
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        raise InputError(f"inputs[{int(np.argmax(bad))}] holds a non-finite value (NaN or infinity)")
    return arr


def texts_to_ids(inputs: list[Any], job: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """A sequence classifier's raw texts as (N, T) int64 ids: the job's tokenizer (its dataset's), each
    text cut to T = input_shape[0] tokens or right-padded with the pad id, as the dataset's rows were."""
    bad = next((i for i, v in enumerate(inputs) if not isinstance(v, str)), None)
    if bad is not None:
        raise InputError(f"inputs[{bad}] is {type(inputs[bad]).__name__}; send every row as text (this job's "
                         f"rows are texts of at most {input_shape[0]} tokens), or every row as {input_shape[0]} "
                         "token ids")
    tokenizer = Tokenizer.from_dict(job.tokenizer)
    texts: list[str] = inputs
    for i, text in enumerate(texts):
        try:
            tokenizer.encode(text)
        except ValueError as e:
            raise InputError(f"inputs[{i}]: {e}") from None
    return tokenizer.encode_padded(texts, input_shape[0]).numpy()


@dataclass
class LoadedModel:
    model: Model
    lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def inference_bytes(self) -> int:
        """Memory of an eval-mode forward, per row (engine.memory)."""
        return estimate(self.model.plan, self.model.dtype.itemsize).inference_bytes


class ModelCache:
    """The last CACHE_SIZE models used, by job id."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str, request: dict[str, Any], input_shape: tuple[int, ...],
            weights: Path) -> LoadedModel:
        with self._lock:
            hit = self._models.get(job_id)
            if hit is not None:
                self._models.move_to_end(job_id)
                return hit
        loaded = LoadedModel(load_model(request, input_shape, weights))
        with self._lock:
            self._models[job_id] = loaded
            self._models.move_to_end(job_id)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return loaded

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._models


def load_model(request: dict[str, Any], input_shape: tuple[int, ...], weights: Path) -> Model:
    model = build_model(request, input_shape, "cpu")
    model.load_state_dict(safetensors.torch.load_file(str(weights), device="cpu"), strict=True)
    return model


def predict(loaded: LoadedModel, x: np.ndarray, loss_type: str, classes: list[Any] | None,
            memory_budget: int) -> dict[str, Any]:
    """Raw outputs; for classification also per-class probabilities and the predicted labels. The rows
    go through the network in chunks whose activations fit `memory_budget` bytes (one row at least):
    a wide layer costs rows x width, which a fixed chunk of rows could make gigabytes."""
    xt = torch.from_numpy(x)
    rows = max(1, memory_budget // loaded.inference_bytes)
    with loaded.lock:
        out = loaded.model.predict(xt, batch_size=rows).to(torch.float64)
    result: dict[str, Any] = {"outputs": out.tolist()}
    if classes is not None:
        if loss_type == "bce_with_logits":      # one logit: p(class 1) = sigmoid(z)
            p1 = torch.sigmoid(out.reshape(-1))
            probs = torch.stack([1 - p1, p1], dim=1)
        else:
            probs = torch.softmax(out.reshape(len(out), -1), dim=1)
        result["probabilities"] = probs.tolist()
        result["classes"] = [classes[i] for i in probs.argmax(dim=1).tolist()]
    return result
