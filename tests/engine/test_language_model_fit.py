"""fit on a token stream (task "language_model"): seeded random windows per step, the validation
tail cut into windows, perplexity beside the loss, and a resume that equals the unbroken run."""
from __future__ import annotations

import math

import pytest
import torch

from engine import Callbacks, Model, fit, losses, optim
from engine.spec import TrainConfig
from engine.train.windows import split_stream, tail_windows
from sequence_support import gpt

TEXT = ("the quick brown fox jumps over the lazy dog. " * 40).encode()


def stream() -> torch.Tensor:
    return torch.tensor(list(TEXT), dtype=torch.int64)


def build(seed=0, dtype=torch.float64):
    model = Model.from_spec(gpt(vocab=256, dim=16, context=12, blocks=1, init_std=0.02), (12,), seed=seed, dtype=dtype)
    return model, losses.make("cross_entropy"), optim.make({"type": "adamw", "lr": 1e-2}, model.parameters())


CONFIG = {"epochs": 4, "batch_size": 8, "steps_per_epoch": 10, "validation_split": 0.1, "seed": 3}


def test_a_gpt_learns_a_repeated_sentence_with_perplexity_reported():
    model, loss, opt = build()
    result = fit(model, loss, opt, stream(), None, {**CONFIG, "epochs": 10}, task="language_model")
    first, last = result.history[0], result.history[-1]
    assert result.steps == 100 and result.status == "completed"
    assert last["val_loss"] < min(first["val_loss"], math.log(256) / 4)   # far below chance
    assert last["val_perplexity"] == pytest.approx(math.exp(last["val_loss"]))
    assert last["train_perplexity"] == pytest.approx(math.exp(last["train_loss"]))
    assert 0 <= last["val_accuracy"] <= 1 and last["val_accuracy"] > 0.5


def test_validation_is_the_contiguous_tail_in_consecutive_windows():
    model, *_ = build()
    tokens = stream()
    rows = split_stream(model, tokens, TrainConfig(validation_split=0.1))
    n_val = round(tokens.numel() * 0.1)
    assert torch.equal(rows.X_train, tokens[:-n_val])
    assert rows.X_val.shape == ((n_val - 1) // 12, 12)
    assert torch.equal(rows.X_val[1], tokens[-n_val + 12:-n_val + 24])
    assert torch.equal(rows.y_val[1], tokens[-n_val + 13:-n_val + 25])


def test_too_short_a_text_is_named():
    model, *_ = build()
    with pytest.raises(ValueError, match="training part of the text has 10 tokens; a window of context_length 12"):
        split_stream(model, stream()[:10], TrainConfig(validation_split=0))
    x, y = tail_windows(stream()[:30], 12)
    assert x.shape == (2, 12) and torch.equal(y[0], stream()[1:13])


class Keep(Callbacks):
    def __init__(self):
        self.checkpoints = []

    def on_checkpoint(self, checkpoint):
        self.checkpoints.append(checkpoint)


def test_a_resumed_run_draws_the_same_windows_and_ends_identical():
    model, loss, opt = build()
    fit(model, loss, opt, stream(), None, CONFIG, task="language_model")
    half, loss2, opt2 = build()
    keep = Keep()
    fit(half, loss2, opt2, stream(), None, {**CONFIG, "epochs": 2}, task="language_model", callbacks=keep)
    resumed, loss3, opt3 = build(seed=9)
    fit(resumed, loss3, opt3, stream(), None, CONFIG, task="language_model", resume=keep.checkpoints[-1])
    for name, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_sequence_classifier_fits_rows_of_ids_and_ids_past_the_table_are_named():
    """Rows of token ids (N, T) with labels: embedding -> attention -> seq_pool -> linear, ids kept int64."""
    spec = {"layers": [{"type": "embedding", "num_embeddings": 6, "embedding_dim": 8, "padding_idx": 5},
                       {"type": "self_attention", "num_heads": 2, "causal": False},
                       {"type": "seq_pool", "mode": "mean"}, {"type": "linear", "out_features": 2}]}
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 5, (64, 7), generator=g)
    y = (X == 3).any(dim=1).long()                       # is there a 3 in the row
    model = Model.from_spec(spec, (7,), seed=0)
    result = fit(model, losses.make("cross_entropy"), optim.make({"type": "adam", "lr": 0.02}, model.parameters()),
                 X, y, {"epochs": 30, "batch_size": 16, "validation_split": 0.25}, task="classification")
    assert result.history[-1]["train_accuracy"] > 0.9
    bad = X.clone()
    bad[10, 2] = 9
    with pytest.raises(ValueError, match=r"token id 9, not a row of layers\[0\] \(embedding\); valid ids: 0..5"):
        fit(model, losses.make("cross_entropy"), optim.make("adam", model.parameters()), bad, y, {"epochs": 1},
            task="classification")
