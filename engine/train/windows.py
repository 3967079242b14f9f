"""A language model's rows: windows of a token stream, each with its next-token targets.

Training draws `batch_size` windows of `context` ids at seeded random offsets of the training
stream for each step (nanoGPT's get_batch): x = stream[s : s+T], y = stream[s+1 : s+T+1].
An epoch is `steps_per_epoch` such steps; the draws come from the run's shuffle generator, which
a checkpoint keeps, so a resumed run draws the windows the unbroken run would have drawn.
Validation is the contiguous tail of the stream, cut into consecutive windows (at most
`max_val_windows`), so every epoch is scored on the same tokens.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..spec import TrainConfig
from ..text import LANGUAGE_MODEL
from .rows import BatchPlan, Rows

MAX_VAL_WINDOWS = 256


def split_stream(model, tokens: Tensor, config: TrainConfig) -> Rows:
    """Rows of a language model: the training stream (X_train = y_train, 1-D) and the tail's windows."""
    if len(model.input_shape) != 1 or model.input_dtype != torch.int64:
        raise ValueError(f"a language model reads token ids (N, T), but this model takes "
                         f"{tuple(model.input_shape)} inputs; start it with an embedding")
    if len(model.output_shape) != 2:
        raise ValueError(f"a language model outputs (N, T, vocabulary) logits; this one outputs "
                         f"{tuple(model.output_shape)}")
    if tokens.dim() != 1:
        raise ValueError(f"a language model trains on a 1-D token stream, got shape {tuple(tokens.shape)}")
    context = model.input_shape[0]
    n = tokens.shape[0]
    n_val = int(round(n * config.validation_split))
    if n - n_val < context + 1:
        raise ValueError(f"the training part of the text has {n - n_val} tokens; a window of context_length "
                         f"{context} needs at least {context + 1} (lower validation_split, or context_length)")
    if n_val and n_val < context + 1:
        raise ValueError(f"the validation tail has {n_val} tokens, fewer than a window of {context} plus its "
                         f"target; raise validation_split, or set it to 0")
    tokens = tokens.to(device=model.device, dtype=torch.int64)
    model.check_ids(tokens)
    train, tail = tokens[:n - n_val], tokens[n - n_val:]
    x_val, y_val = tail_windows(tail, context)
    return Rows(train, train, x_val, y_val, LANGUAGE_MODEL, None, None)


def tail_windows(tail: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Consecutive windows of the validation tail, (W, T) inputs and (W, T) next-token targets."""
    count = min(max((tail.shape[0] - 1) // context, 0), MAX_VAL_WINDOWS)
    rows = torch.arange(count, device=tail.device).unsqueeze(1) * context + torch.arange(context, device=tail.device)
    return tail[rows], tail[rows + 1]


def steps_per_epoch(config: TrainConfig, n_train: int, context: int) -> int:
    """config.steps_per_epoch; absent, about one pass over the n_train training tokens."""
    return config.steps_per_epoch or max(1, n_train // (config.batch_size * context))


def window_plan(config: TrainConfig, n_train: int, context: int) -> BatchPlan:
    """An epoch's steps, each of batch_size windows."""
    steps = steps_per_epoch(config, n_train, context)
    return BatchPlan([(0, config.batch_size)] * steps, steps - 1)


def first_windows(rows: Rows, n: int, context: int) -> tuple[Tensor, Tensor]:
    """The first n consecutive windows of the training stream (the init report's batch)."""
    x, y = tail_windows(rows.X_train, context)
    return x[:n], y[:n]


def window_batches(rows: Rows, plan: BatchPlan, context: int, generator: torch.Generator
                   ) -> Iterator[tuple[Tensor, Tensor]]:
    """An epoch's (xb, yb): batch_size windows at offsets drawn from `generator` for every step."""
    stream = rows.X_train
    offsets = torch.arange(context, device=stream.device)
    for lo, hi in plan.bounds:
        start = torch.randint(0, stream.shape[0] - context, (hi - lo,), generator=generator)
        index = start.to(stream.device).unsqueeze(1) + offsets                  # (B, T)
        yield stream[index], stream[index + 1]
