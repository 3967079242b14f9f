"""engine.train.fit: exact resume, non-finite diagnosis, early stopping, cancellation, callbacks,
compatibility checks, metrics and per-layer health; engine.checkpoint round trips."""
from __future__ import annotations

import math
import os
import re

import pytest
import torch
from safetensors.torch import save_file
from sklearn.metrics import mean_absolute_error, r2_score

from engine import (Callbacks, Checkpoint, FitResult, Model, NonFiniteError, TrainingError, check_compatible, fit,
                    losses, optim)
from engine import checkpoint as ckpt_io
from engine.data import split_indices
from engine.spec import TrainConfig


# ----------------------------------------------------------------------------- helpers
def blobs(n=250, d=6, classes=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centers = 2.5 * torch.randn(classes, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    X = centers[y] + torch.randn(n, d, generator=g)
    return X.to(dtype), y


def smooth(n=200, d=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] - X[:, 3]
    return X.to(dtype), y.to(dtype)


MLP = {"layers": [
    {"type": "linear", "out_features": 32},
    {"type": "batchnorm"},
    {"type": "relu"},
    {"type": "dropout", "p": 0.3},
    {"type": "linear", "out_features": 3},
]}


def build(spec=MLP, input_shape=(6,), opt=None, loss="cross_entropy", dtype=torch.float32, seed=1):
    model = Model.from_spec(spec, input_shape, seed=seed, dtype=dtype)
    return model, losses.make(loss), optim.make(opt or {"type": "adam", "lr": 1e-2}, model.parameters())


class Recorder(Callbacks):
    def __init__(self, stop_after_epochs=None, stop_after_calls=None):
        self.stop_after_epochs, self.stop_after_calls = stop_after_epochs, stop_after_calls
        self.progress, self.metrics, self.checkpoints, self.stop_calls = [], [], [], 0

    def on_step(self, progress):
        self.progress.append(progress)

    def on_epoch_end(self, metrics):
        self.metrics.append(metrics)

    def should_stop(self):
        self.stop_calls += 1
        if self.stop_after_calls is not None and self.stop_calls >= self.stop_after_calls:
            return True
        return self.stop_after_epochs is not None and len(self.metrics) >= self.stop_after_epochs

    def on_checkpoint(self, checkpoint):
        self.checkpoints.append(checkpoint)


def assert_same_state(a: Model, b: Model):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


LOSS_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "steps")


# ----------------------------------------------------------------------------- resume
RESUME_CONFIG = dict(epochs=6, batch_size=32, validation_split=0.25, seed=5, grad_clip_norm=5.0,
                     schedule={"type": "cosine", "warmup_steps": 7})


@pytest.mark.parametrize("how", ["should_stop", "periodic_checkpoint"])
@pytest.mark.parametrize("early_stopping", [
    {"monitor": "val_loss", "patience": 100, "restore_best": True},      # tracks, never stops
    {"monitor": "train_loss", "patience": 2, "min_delta": 1e9},         # stops at epoch 3, after the break
])
def test_resume_is_bit_identical(tmp_path, how, early_stopping):
    X, y = blobs()
    config = TrainConfig.model_validate({**RESUME_CONFIG, "early_stopping": early_stopping})

    model, loss, opt = build()
    full_cb = Recorder()
    full = fit(model, loss, opt, X, y, config, task="classification", callbacks=full_cb)

    if how == "should_stop":       # interrupted after epoch 2: fit returns cancelled at the epoch boundary
        m2, l2, o2 = build()
        cb = Recorder(stop_after_epochs=2)
        part = fit(m2, l2, o2, X, y, config, task="classification", callbacks=cb)
        assert part.status == "cancelled" and part.epochs_completed == 2
        ckpt = cb.checkpoints[-1]
        assert ckpt.status == "cancelled"
    else:                          # the uninterrupted run's own checkpoint after epoch 2
        ckpt = full_cb.checkpoints[1]
        assert ckpt.status == "running"
    assert ckpt.epoch == 2
    path = tmp_path / "ckpt.safetensors"
    ckpt_io.save(path, ckpt)
    loaded = ckpt_io.load(path)

    m3, l3, o3 = build(seed=99)    # a fresh model: every weight must come from the checkpoint
    resumed = fit(m3, l3, o3, X, y, config, task="classification", resume=loaded)

    assert_same_state(model, m3)
    assert resumed.status == full.status and resumed.steps == full.steps
    assert resumed.epochs_completed == full.epochs_completed
    assert (resumed.best_epoch, resumed.best_value) == (full.best_epoch, full.best_value)
    assert len(resumed.history) == len(full.history)
    for h_full, h_res in zip(full.history, resumed.history):
        for k in LOSS_KEYS:
            assert h_full[k] == h_res[k], (h_full["epoch"], k)
        assert h_full["layers"] == h_res["layers"]
    assert opt.state_dict().keys() == o3.state_dict().keys()
    for k, v in opt.state_dict().items():
        assert torch.equal(v, o3.state_dict()[k]), k
    if early_stopping["patience"] == 2:
        assert full.status == "early_stopped" and full.epochs_completed == 3


def test_resume_rejects_another_split():
    X, y = blobs()
    model, loss, opt = build()
    cb = Recorder()
    fit(model, loss, opt, X, y, {"epochs": 1, "validation_split": 0.2}, task="classification", callbacks=cb)
    m2, l2, o2 = build()
    with pytest.raises(ValueError, match="validation_split"):
        fit(m2, l2, o2, X, y, {"epochs": 2, "validation_split": 0.3}, task="classification",
            resume=cb.checkpoints[-1])


# ----------------------------------------------------------------------------- non-finite
def test_huge_lr_sgd_diverges_with_a_named_layer():
    X, y = smooth(n=128)
    spec = {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"},
                       {"type": "linear", "out_features": 16}, {"type": "relu"},
                       {"type": "linear", "out_features": 1}]}
    model, loss, opt = build(spec, (4,), {"type": "sgd", "lr": 50.0}, "mse")
    with pytest.raises(NonFiniteError) as info:
        fit(model, loss, opt, X, 100 * y, {"epochs": 20, "batch_size": 16, "validation_split": 0},
            task="regression")
    e = info.value
    assert isinstance(e, TrainingError) and e.code == "non_finite"
    assert e.step >= 2 and e.epoch >= 1
    assert e.layer_key in model.keys and e.layer_kind == "linear"
    assert re.fullmatch(r"loss became (nan|inf) at step \d+ \(epoch \d+\); first non-finite "
                        r"(gradient|weights) in layer [024] \(linear\)", str(e).replace("no non-finite gradient; ",
                                                                                        "")), str(e)
    assert f"at step {e.step} (epoch {e.epoch})" in str(e)


def test_overflowing_inputs_are_caught_at_the_first_step():
    # float32 overflows: X ~ 1e37 gives outputs ~ 1e37, the squared error is inf at step 1
    X, y = smooth(n=64)
    spec = {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                       {"type": "linear", "out_features": 1}]}
    model, loss, opt = build(spec, (4,), {"type": "sgd", "lr": 0.1}, "mse")
    with pytest.raises(NonFiniteError) as info:
        fit(model, loss, opt, X * 1e37, y, {"epochs": 1, "validation_split": 0}, task="regression")
    e = info.value
    assert (e.step, e.epoch) == (1, 1)
    assert str(e) == "loss became inf at step 1 (epoch 1); first non-finite gradient in layer 2 (linear)"
    assert (e.layer_key, e.layer_kind) == ("2", "linear")


def test_nan_in_data_is_a_value_error_naming_the_row():
    X, y = blobs()
    X[17, 2] = math.nan
    model, loss, opt = build()
    with pytest.raises(ValueError, match=r"X has NaN or infinite values in 1 row \(first: row 17\)"):
        fit(model, loss, opt, X, y, {"epochs": 1}, task="classification")


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_stops_and_restores_best():
    X, y = blobs()
    model, loss, opt = build()
    cb = Recorder()
    config = {"epochs": 20, "early_stopping": {"monitor": "train_loss", "patience": 2, "min_delta": 1e9}}
    r = fit(model, loss, opt, X, y, config, task="classification", callbacks=cb)
    assert r.status == "early_stopped"
    assert r.epochs_completed == 3 and len(r.history) == 3 and r.best_epoch == 1
    assert r.best_value == r.history[0]["train_loss"]
    epoch1 = cb.checkpoints[0]
    assert epoch1.epoch == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, epoch1.model_state[k]), k
    assert [c.status for c in cb.checkpoints] == ["running", "running", "early_stopped"]
    final = cb.checkpoints[-1]
    assert final.early_stopping == {"best_value": r.best_value, "best_epoch": 1, "wait": 2}
    assert not torch.equal(final.model_state["0.weight"], epoch1.model_state["0.weight"])
    assert all(torch.equal(final.best_state[k], v) for k, v in epoch1.model_state.items())


def test_early_stopping_on_val_accuracy_mode_max():
    X, y = blobs()
    model, loss, opt = build()
    r = fit(model, loss, opt, X, y, {"epochs": 30, "early_stopping": {"monitor": "val_accuracy", "patience": 3}},
            task="classification")
    accs = [h["val_accuracy"] for h in r.history]
    assert r.best_value == max(accs) and r.best_epoch == accs.index(max(accs)) + 1
    if r.status == "early_stopped":
        assert r.epochs_completed == r.best_epoch + 3


def test_val_monitor_without_validation_is_rejected():
    X, y = blobs()
    model, loss, opt = build()
    with pytest.raises(ValueError, match="validation_split is 0"):
        fit(model, loss, opt, X, y, {"validation_split": 0, "early_stopping": {"monitor": "val_loss"}},
            task="classification")
    with pytest.raises(ValueError, match="regression metric"):
        fit(model, loss, opt, X, y, {"early_stopping": {"monitor": "val_r2"}}, task="classification")


# ----------------------------------------------------------------------------- cancellation, callbacks
def test_cancellation_returns_cancelled_mid_epoch():
    X, y = blobs()
    model, loss, opt = build()
    cb = Recorder(stop_after_calls=5)
    r = fit(model, loss, opt, X, y, {"epochs": 3, "batch_size": 16}, task="classification", callbacks=cb)
    assert r.status == "cancelled" and r.steps == 4 and r.epochs_completed == 0 and r.history == []
    assert len(cb.progress) == 4 and cb.metrics == []
    # mid-epoch weights would resume inexactly, so no checkpoint: the last epoch's stays the resume point
    assert cb.checkpoints == []


@pytest.mark.parametrize("every, expected", [(1, [1, 2, 3, 4]), (3, [3, 4]), (2, [2, 4]), (0, [4])])
def test_callbacks_are_called_the_right_number_of_times(every, expected):
    X, y = blobs(n=90)                       # 72 training rows, batches of 16: 5 steps per epoch
    model, loss, opt = build()
    cb = Recorder()
    r = fit(model, loss, opt, X, y, {"epochs": 4, "batch_size": 16}, task="classification", callbacks=cb,
            checkpoint_every=every)
    assert r.status == "completed" and r.steps == 20
    assert len(cb.progress) == 20 and cb.stop_calls == 20
    assert [p.step for p in cb.progress] == list(range(1, 21))
    last = cb.progress[-1]
    assert (last.epoch, last.epochs, last.step, last.total_steps, last.fraction) == (4, 4, 20, 20, 1.0)
    assert [m["epoch"] for m in cb.metrics] == [1, 2, 3, 4]
    assert [c.epoch for c in cb.checkpoints] == expected
    assert [c.status for c in cb.checkpoints] == ["running"] * (len(expected) - 1) + ["completed"]
    assert isinstance(r, FitResult) and r.history == cb.metrics


# ----------------------------------------------------------------------------- compatibility
@pytest.mark.parametrize("args, kwargs, message", [
    (("cross_entropy", "classification", 3, (1,)), {},
     "cross_entropy needs one output per class: the model outputs 1 value per sample, the data has 3 classes"),
    (({"type": "cross_entropy"}, "classification", 3, (5,)), {}, "the model outputs 5 values per sample"),
    (("bce_with_logits", "classification", 3, (1,)), {}, "bce_with_logits is for 2 classes"),
    (("bce_with_logits", "classification", 2, (2,)), {}, "bce_with_logits needs 1 output per sample"),
    (("mse", "classification", 3, (3,)), {}, "mse is a regression loss"),
    (("cross_entropy", "regression", None, (1,)), {}, "cross_entropy is a classification loss"),
    (("mse", "regression", None, (2,)), {"n_targets": 1}, "mse needs one output per target"),
    (("cross_entropy", "classification", 3, (3, 4, 4)), {}, "add a flatten and a linear layer"),
    (("cross_entropy", "classification", 1, (1,)), {}, "at least 2 classes"),
    (("mse", "clustering", None, (1,)), {}, "task must be one of"),
])
def test_check_compatible_errors(args, kwargs, message):
    with pytest.raises(ValueError) as info:
        check_compatible(*args, **kwargs)
    assert message in str(info.value)


def test_check_compatible_accepts_good_combinations():
    from engine.spec import CrossEntropyLoss
    check_compatible(CrossEntropyLoss(type="cross_entropy"), "classification", 3, (3,))
    check_compatible("bce_with_logits", "classification", 2, (1,))
    check_compatible("huber", "regression", None, (4,), n_targets=4)


def test_fit_checks_compatibility_before_training():
    X, y = blobs()
    spec = {"layers": [{"type": "linear", "out_features": 1}]}
    model, loss, opt = build(spec)
    with pytest.raises(ValueError, match="cross_entropy needs one output per class: the model outputs 1 value "
                                         "per sample, the data has 3 classes"):
        fit(model, loss, opt, X, y, {"epochs": 1}, task="classification")
    with pytest.raises(ValueError, match="the model expects"):
        fit(model, loss, opt, X[:, :4], y, {"epochs": 1}, task="classification")


# ----------------------------------------------------------------------------- metrics
def test_regression_metrics_match_sklearn():
    X, y = smooth(n=150, dtype=torch.float64)
    spec = {"layers": [{"type": "linear", "out_features": 16}, {"type": "tanh"},
                       {"type": "linear", "out_features": 1}]}
    model, loss, opt = build(spec, (4,), {"type": "adam", "lr": 1e-2}, "mse", dtype=torch.float64)
    config = TrainConfig(epochs=3, batch_size=20, validation_split=0.2, seed=3)
    r = fit(model, loss, opt, X, y, config, task="regression")
    h = r.history[-1]
    assert set(h) == {"epoch", "train_loss", "train_mae", "train_r2", "val_loss", "val_mae", "val_r2", "lr",
                      "epoch_time_s", "steps", "layers", "findings"}
    _, val_idx = split_indices(150, 0.2, 3)
    assert val_idx.numel() == 30
    pred = model.predict(X[val_idx])[:, 0].numpy()
    truth = y[val_idx].numpy()
    assert h["val_r2"] == pytest.approx(r2_score(truth, pred), rel=1e-12)
    assert h["val_mae"] == pytest.approx(mean_absolute_error(truth, pred), rel=1e-12)
    assert h["val_loss"] == pytest.approx(float(((pred - truth) ** 2).mean()), rel=1e-12)
    assert h["steps"] == 3 * 6 and h["epoch"] == 3


def test_train_metrics_weight_the_partial_batch():
    # lr so small the weights barely move: epoch metrics equal the metrics of the initial model
    X, y = blobs(n=70, dtype=torch.float64)
    spec = {"layers": [{"type": "linear", "out_features": 3}]}
    model, loss, opt = build(spec, opt={"type": "sgd", "lr": 1e-300}, dtype=torch.float64)
    out = model.predict(X)
    expected_loss = float(torch.nn.functional.cross_entropy(out, y))
    expected_acc = float((out.argmax(1) == y).double().mean())
    r = fit(model, loss, opt, X, y, {"epochs": 1, "batch_size": 32, "validation_split": 0, "shuffle": False},
            task="classification")
    h = r.history[0]
    assert h["steps"] == 3                       # 32 + 32 + 6: the last partial batch is kept
    assert h["train_loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert h["train_accuracy"] == pytest.approx(expected_acc, rel=1e-12)
    assert "val_loss" not in h


def test_binary_classification_with_bce():
    X, y = blobs(classes=2)
    spec = {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                       {"type": "linear", "out_features": 1}]}
    model, loss, opt = build(spec, opt={"type": "adam", "lr": 0.05}, loss="bce_with_logits")
    r = fit(model, loss, opt, X, y, {"epochs": 10}, task="classification")
    assert r.history[-1]["val_accuracy"] >= 0.9


def test_a_single_sample_last_batch_joins_the_one_before_with_batchnorm():
    X, y = blobs(n=41)                       # 33 training rows, batches of 16: 16 + 17, not 16 + 16 + 1
    model, loss, opt = build()
    r = fit(model, loss, opt, X, y, {"epochs": 2, "batch_size": 16}, task="classification")
    assert r.steps == 4
    with pytest.raises(ValueError, match="at least 2 samples per batch"):
        fit(model, loss, opt, X, y, {"epochs": 1, "batch_size": 1}, task="classification")


# ----------------------------------------------------------------------------- health
HEALTH_NET = {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                         {"type": "linear", "out_features": 1}]}


def test_health_numbers_for_sgd():
    X, y = smooth(n=64, dtype=torch.float64)
    lr = 0.05
    model, loss, opt = build(HEALTH_NET, (4,), {"type": "sgd", "lr": lr}, "mse", dtype=torch.float64)
    r = fit(model, loss, opt, X, y, {"epochs": 1, "batch_size": 16, "validation_split": 0}, task="regression")
    layers = r.history[0]["layers"]
    assert list(layers) == ["0", "1", "2"]
    assert layers["1"]["type"] == "relu" and 0.0 <= layers["1"]["dead_fraction"] < 1.0
    grads, params = model.grads(), model.parameters()   # the last batch (full-size) is the health step
    for key in ("0", "2"):
        entry = layers[key]
        assert entry["type"] == "linear"
        g = torch.cat([grads[f"{key}.weight"].flatten(), grads[f"{key}.bias"].flatten()])
        w = torch.cat([params[f"{key}.weight"].flatten(), params[f"{key}.bias"].flatten()])
        w_before = w + lr * g
        assert entry["grad_norm"] == pytest.approx(float(torch.linalg.vector_norm(g)), rel=1e-12)
        assert entry["weight_norm"] == pytest.approx(float(torch.linalg.vector_norm(w)), rel=1e-12)
        expected = float(torch.linalg.vector_norm(lr * g) / torch.linalg.vector_norm(w_before))
        assert entry["update_ratio"] == pytest.approx(expected, rel=1e-9)


def test_dead_relu_after_a_very_negative_bias():
    X, y = smooth(n=64, dtype=torch.float64)
    model, loss, opt = build(HEALTH_NET, (4,), {"type": "sgd", "lr": 0.05}, "mse", dtype=torch.float64)
    model.parameters()["0.bias"].fill_(-100.0)
    r = fit(model, loss, opt, X, y, {"epochs": 2, "batch_size": 16, "validation_split": 0}, task="regression")
    layers = r.history[-1]["layers"]
    assert layers["1"]["dead_fraction"] == 1.0
    assert layers["0"]["grad_norm"] == 0.0 and layers["0"]["update_ratio"] == 0.0


def test_dead_fraction_counts_channel_positions():
    from engine.health import dead_fraction
    y = torch.zeros(5, 2, 3, 3)
    y[0, 0, 0, 0] = 1.0        # one live unit out of 18
    y[4, 1, 2, 2] = 2.0        # another
    assert dead_fraction(y) == pytest.approx(16 / 18)


# ----------------------------------------------------------------------------- checkpoint files
def test_checkpoint_round_trip_is_safetensors_and_atomic(tmp_path):
    X, y = blobs()
    model, loss, opt = build()
    cb = Recorder()
    fit(model, loss, opt, X, y, {"epochs": 2, "early_stopping": {"patience": 5}}, task="classification",
        callbacks=cb)
    ckpt = cb.checkpoints[-1]
    ckpt.meta = {"job_id": "abc"}
    path = tmp_path / "run.safetensors"
    ckpt_io.save(path, ckpt)
    assert os.listdir(tmp_path) == ["run.safetensors"]          # no temp file left behind
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and raw[8 + header_len - 1:8 + header_len] in (b"}", b" ")
    back = ckpt_io.load(path)
    assert isinstance(back, Checkpoint)
    assert (back.epoch, back.step, back.status, back.base_lr, back.meta) == (2, ckpt.step, "completed", 0.01,
                                                                            {"job_id": "abc"})
    assert back.config == ckpt.config and back.history == ckpt.history
    assert back.early_stopping == ckpt.early_stopping
    for attr in ("model_state", "optimizer_state", "rng", "best_state"):
        a, b = getattr(ckpt, attr), getattr(back, attr)
        assert set(a) == set(b), attr
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (attr, k)
    assert back.rng["shuffle"].dtype == torch.uint8


def test_loading_a_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a chainrule checkpoint"):
        ckpt_io.load(path)


# ----------------------------------------------------------------------------- the loss fit trains with
def test_fit_leaves_the_callers_loss_as_it_was():
    """fit checks labels once and trains with its own label-check-free copy of the loss, so the
    caller's object is never flipped, not even while fit runs (as on_step sees it)."""
    X, y = blobs()
    model, loss, opt = build()
    seen = []

    class Watch(Callbacks):
        def on_step(self, progress):
            seen.append(loss.check_labels)

    r = fit(model, loss, opt, X, y, {"epochs": 2, "batch_size": 64}, task="classification", callbacks=Watch())
    assert r.steps == len(seen) > 0 and all(seen) and loss.check_labels is True
    with pytest.raises(ValueError, match="labels must be integers 0..C-1"):
        fit(model, loss, opt, X, torch.where(y == 0, -1, y), {"epochs": 1}, task="classification")
