"""Training checkpoints: everything `fit` needs to resume bit-identically, stored as safetensors.

Never pickle (no torch.save / torch.load): a checkpoint file holds only raw tensors and
one JSON string, so loading one cannot run code.

File layout (one .safetensors file):
    model/<state_dict name>   model parameters and buffers (torch.nn names)
    optim/<key>               optimizer.state_dict() tensors
    rng/<name>                generator states as uint8 tensors ("shuffle", "dropout")
    best/<state_dict name>    early stopping's best weights (when restore_best keeps them)
    metadata["chainrule.checkpoint"] = JSON of every non-tensor field
Writes are atomic: a temp file in the same directory, fsync, then os.replace.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

FORMAT = "chainrule.checkpoint"
VERSION = 1
_PREFIXES = {"model_state": "model/", "optimizer_state": "optim/", "rng": "rng/", "best_state": "best/"}


@dataclass
class Checkpoint:
    """The state of a run at the end of epoch `epoch` (1-based; 0 = before training).

    status is "running" for the periodic checkpoints of a run in progress and the final
    status ("completed", "early_stopped", "cancelled") for the one fit emits at its end.
    Every checkpoint holds the weights as training left them (before restore_best), so
    any of them can be resumed; `best_state` holds the best weights when kept.
    """
    epoch: int
    step: int
    model_state: dict[str, Tensor]
    optimizer_state: dict[str, Tensor]
    rng: dict[str, Tensor] = field(default_factory=dict)
    early_stopping: dict[str, Any] = field(default_factory=dict)  # best_value, best_epoch, wait
    best_state: dict[str, Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)         # TrainConfig, JSON mode
    base_lr: float | None = None                                 # the lr the schedule scales
    status: str = "running"
    meta: dict[str, Any] = field(default_factory=dict)           # free for the caller (job id, ...)
    init_report: dict[str, Any] | None = None                    # engine.diagnostics' report at step 0


def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write `ckpt` to `path` atomically (safetensors only)."""
    tensors: dict[str, Tensor] = {}
    for attr, prefix in _PREFIXES.items():
        for k, v in (getattr(ckpt, attr) or {}).items():
            tensors[prefix + k] = _cpu(v)
    info = {"version": VERSION, "epoch": ckpt.epoch, "step": ckpt.step,
            "early_stopping": ckpt.early_stopping, "has_best": ckpt.best_state is not None,
            "history": ckpt.history, "config": ckpt.config, "base_lr": ckpt.base_lr,
            "status": ckpt.status, "meta": ckpt.meta, "init_report": ckpt.init_report}
    metadata = {FORMAT: json.dumps(info, allow_nan=True)}
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save`; tensors land on `device`."""
    with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
        metadata = f.metadata() or {}
        if FORMAT not in metadata:
            raise ValueError(f"{os.fspath(path)} is not a chainrule checkpoint (no {FORMAT!r} metadata)")
        info = json.loads(metadata[FORMAT])
        if info.get("version") != VERSION:
            raise ValueError(f"checkpoint version {info.get('version')!r} is not supported "
                             f"(this engine reads version {VERSION})")
        groups: dict[str, dict[str, Tensor]] = {attr: {} for attr in _PREFIXES}
        for name in f.keys():
            for attr, prefix in _PREFIXES.items():
                if name.startswith(prefix):
                    groups[attr][name[len(prefix):]] = f.get_tensor(name)
                    break
    return Checkpoint(
        epoch=int(info["epoch"]), step=int(info["step"]),
        model_state=groups["model_state"], optimizer_state=groups["optimizer_state"],
        rng=groups["rng"], early_stopping=info.get("early_stopping") or {},
        best_state=groups["best_state"] if info.get("has_best") else None,
        history=info.get("history") or [], config=info.get("config") or {},
        base_lr=info.get("base_lr"), status=info.get("status", "running"), meta=info.get("meta") or {},
        init_report=info.get("init_report"))
