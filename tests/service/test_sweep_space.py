"""Parameters address the job by dotted path: defaults written out when addressed, `*` for every
element, and a path that addresses nothing is an error that names it."""
from __future__ import annotations

import pytest

from core.jobspec import JobRequest
from core.sweeps import SweepRequest, space

DATASET_ID = "3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10"   # any id: these tests build specs only

LAYERS = [{"type": "linear", "out_features": 16, "init": "he_normal"}, {"type": "relu"},
          {"type": "linear", "out_features": 16, "init": "he_normal"}, {"type": "relu"},
          {"type": "linear", "out_features": 3}]


def sweep(parameters: dict, **job) -> SweepRequest:
    return SweepRequest.model_validate({"name": "s", "dataset_id": DATASET_ID, "max_trials": 4, "parameters": parameters,
                                        "job": {"model": {"layers": LAYERS}, "loss": "cross_entropy", **job}})


def test_a_point_is_written_at_each_path_and_the_job_validates():
    req = sweep({"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "model.layers.2.out_features": {"choice": [8, 32]},
                 "loss.label_smoothing": {"uniform": [0, 0.2]}}, optimizer={"type": "sgd", "momentum": 0.9})
    job = space.apply(req.job, {"optimizer.lr": 0.02, "model.layers.2.out_features": 32,
                                "loss.label_smoothing": 0.1}, req.parameters)
    parsed = JobRequest.model_validate({**job, "dataset_id": DATASET_ID})
    assert parsed.optimizer.lr == 0.02 and parsed.optimizer.momentum == 0.9   # the rest as the user wrote it
    assert parsed.model.layers[2].out_features == 32 and parsed.model.layers[0].out_features == 16
    assert parsed.loss.label_smoothing == 0.1


def test_a_field_left_at_its_default_can_be_addressed_and_its_object_switched():
    req = sweep({"optimizer.type": {"choice": ["sgd", "rmsprop"]}, "optimizer.lr": {"choice": [0.5]},
                 "schedule.type": {"choice": ["cosine"]}})           # no optimizer, no schedule given
    job = space.apply(req.job, {"optimizer.type": "rmsprop", "optimizer.lr": 0.5, "schedule.type": "cosine"},
                      req.parameters)
    parsed = JobRequest.model_validate({**job, "dataset_id": DATASET_ID})
    # the default Adam's own fields (betas, eps) are not carried into RMSprop, which would refuse them
    assert parsed.optimizer.type == "rmsprop" and parsed.optimizer.lr == 0.5 and parsed.optimizer.alpha == 0.99
    assert parsed.schedule.type == "cosine"


def test_wildcard_choice_swaps_only_elements_holding_one_of_its_values():
    req = sweep({"model.layers.*.type": {"choice": ["relu", "tanh", "sigmoid"]},
                 "model.layers.*.init": {"choice": ["he_normal", "xavier_uniform"]},
                 "model.layers.*.out_features": {"int_uniform": [4, 64]}})
    job = space.apply(req.job, {"model.layers.*.type": "tanh", "model.layers.*.init": "xavier_uniform"},
                      req.parameters)
    assert [layer["type"] for layer in job["model"]["layers"]] == ["linear", "tanh", "linear", "tanh", "linear"]
    assert [layer.get("init") for layer in job["model"]["layers"]] == ["xavier_uniform", None, "xavier_uniform",
                                                                       None, None]
    # a range under '*' sets the field wherever it exists (the output layer too)
    job = space.apply(req.job, {"model.layers.*.out_features": 8}, req.parameters)
    assert [layer.get("out_features") for layer in job["model"]["layers"]] == [8, None, 8, None, 8]


@pytest.mark.parametrize("path, says", [
    ("model.layers.9.out_features", "model.layers is a list of 5 (indices 0-4); there is no index 9"),
    ("model.depth.x", "model is an object with no field 'depth'"),
    ("optimizer.lr.x", "optimizer.lr is the value 0.001, which has no field 'x'"),
    ("model.layers.x.type", "model.layers is a list of 5, which has no field 'x'"),  # a name, not an index
    ("model.layers.*.p", "the '*' matches no element"),
])
def test_a_path_that_addresses_nothing_is_an_error_naming_it(path, says):
    req = sweep({path: {"choice": [1]}})
    with pytest.raises(space.PathError) as caught:
        space.apply(req.job, {path: 1}, req.parameters)
    assert caught.value.path == path and says in str(caught.value), str(caught.value)


def test_choices_go_to_optuna_by_index_so_any_json_value_is_a_choice():
    adam, sgd = {"type": "adam", "lr": 0.01}, {"type": "sgd", "lr": 0.1, "momentum": 0.9}
    req = sweep({"optimizer": {"choice": [adam, sgd]}})
    dist = space.distribution(req.parameters["optimizer"])
    assert list(dist.choices) == [0, 1]
    assert space.user_value(req.parameters["optimizer"], 1) == sgd
    assert space.grid_size(sweep({"a.b": {"choice": [1, 2, 3]}, "c": {"choice": [1, 2]}})) == 6
