"""What GET /v1/jobs/{id}/attention shows: the weights (a succeeded job's own, or the latest checkpoint's
while it runs), the sequence (the start of the job's validation data, or the caller's text), and each
self_attention layer's weights P per head for it (engine.attention_maps)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from torch import Tensor

from core import artifacts
from core.jobspec import build_model
from core.lifecycle import JobStatus
from core.settings import Settings
from core.tables import Dataset, Job
from engine import checkpoint as ckpt_io
from engine.data import split_indices
from engine.text import LANGUAGE_MODEL, Tokenizer, split_tokens

from .errors import problem


@dataclass
class Weights:
    state: dict[str, Tensor] | None      # None: a succeeded job's weights file, which the model cache holds
    source: str                          # "weights" | "checkpoint"
    epoch: int | None


def weights_of(job: Job, settings: Settings) -> Weights:
    """A succeeded job's weights, else its latest checkpoint's; 409 when it has neither yet."""
    if job.status == JobStatus.SUCCEEDED:
        return Weights(None, "weights", (job.result or {}).get("epochs_completed"))
    path = artifacts.resolve(settings, job.checkpoint_path) if job.checkpoint_path else None
    if path is not None and path.is_file():
        try:
            ckpt = ckpt_io.load(path)
        except (OSError, ValueError, KeyError):          # replaced mid-read by the next checkpoint
            ckpt = None
        if ckpt is not None:
            return Weights(ckpt.model_state, "checkpoint", ckpt.epoch)
    raise problem(409, ["path", "job_id"], f"job {job.id!r} is {job.status} and has no checkpoint yet: attention "
                  "maps exist from the first checkpoint of a running job, and for a succeeded one")


def model_from_checkpoint(job: Job, state: dict[str, Tensor]):
    model = build_model(job.request, tuple(int(d) for d in job.input_shape), "cpu")
    model.load_state_dict(state, strict=True)
    return model


def validation_sample(job: Job, dataset: Dataset | None, settings: Settings, length: int) -> Tensor:
    """The first `length` ids of the job's validation data: the text's tail for a language model, the
    first validation row for a sequence classifier (engine.data's split); the training data when there
    is no validation part. 409 once the dataset is gone."""
    if dataset is None:
        raise problem(409, ["path", "job_id"], f"the dataset of job {job.id!r} was deleted; send `text` instead")
    tensors = load_file(str(artifacts.resolve(settings, dataset.path)))
    split = float(job.request.get("validation_split", 0.0))
    if dataset.task == LANGUAGE_MODEL:
        train, tail = split_tokens(tensors["ids"], split)
        ids = tail if tail.numel() else train
    else:
        X = tensors["X"]
        train_idx, val_idx = split_indices(X.shape[0], split, int(job.request.get("seed", 0)))
        ids = X[int(val_idx[0] if val_idx.numel() else train_idx[0])]
    return ids[:length].long()


def token_labels(ids: Tensor, tokenizer: Tokenizer | None) -> list[str]:
    """Each id as the text it stands for (a padding id as <pad>; a lone byte of a multi-byte
    character as the replacement character), or the id itself without a tokenizer."""
    if tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return ["<pad>" if i == tokenizer.pad_id else tokenizer.decode(torch.tensor([i])) for i in ids.tolist()]
