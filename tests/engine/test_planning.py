"""Shape inference (engine.plan) against torch.nn's shapes, and the errors a spec can get: a
SpecError naming the layer and both shapes, or a pydantic ValidationError for the graph."""
from __future__ import annotations

import re

import pytest
import torch
from pydantic import ValidationError

from engine import Model, ModelSpec, SpecError, plan
from test_layers import CASES, conv, lin, make_twin, t

F64 = torch.float64


@pytest.mark.parametrize("case", list(CASES))
def test_shape_inference_matches_torch(case):
    layers, in_shape = CASES[case]
    p = plan({"layers": layers}, in_shape)
    twin = make_twin(p, 0)
    seen: dict[str, tuple[int, ...]] = {}
    for key in p.keys:
        getattr(twin, key).register_forward_hook(
            lambda mod, args, out, key=key: seen.__setitem__(key, tuple(out.shape[1:])))
    y = twin.train()(torch.randn(2, *in_shape, dtype=F64))
    assert [layer.out_shape for layer in p.layers] == [seen[k] for k in p.keys]
    assert p.output_shape == tuple(y.shape[1:])
    assert Model.from_spec({"layers": layers}, in_shape).output_shape == tuple(y.shape[1:])


MISMATCHES = {
    # name: (layers, input shape, failing index, its type, substrings the message must hold)
    "attention_on_flat": ([lin(4), t("self_attention", num_heads=2)], (3,), 1, "self_attention",
                          ["(N, 4)", "(N, T, D)"]),
    "add_unequal": ([lin(4, name="a", inputs=["input"]), lin(5, name="b", inputs=["input"]),
                     t("add", name="s", inputs=["a", "b"])], (3,), 2, "add", ["'s'", "(N, 4)", "(N, 5)"]),
    "conv_kernel_too_big": ([conv(4, 5)], (1, 3, 3), 0, "conv2d", ["(N, 1, 3, 3)", "5x5", "3x3"]),
    "conv_kernel_too_big_padded": ([t("relu"), conv(4, (7, 3), padding=1)], (1, 4, 4), 1, "conv2d",
                                   ["(N, 1, 4, 4)", "7x3", "6x6"]),
    "conv_on_flat": ([conv(4, 3)], (10,), 0, "conv2d", ["(N, 10)", "(N, C, H, W)"]),
    "concat_mismatch": ([conv(2, 3, name="a", inputs=["input"]), conv(2, 1, name="b", inputs=["input"]),
                         t("concat", name="cat", inputs=["a", "b"])], (1, 5, 5), 2, "concat",
                        ["(N, 2, 3, 3)", "(N, 2, 5, 5)"]),
    "concat_rank_mismatch": ([t("flatten", name="f", inputs=["input"]),
                              t("concat", name="cat", inputs=["f", "input"])], (1, 2, 2), 1, "concat",
                             ["(N, 4)", "(N, 1, 2, 2)"]),
    "concat_batch_dim": ([lin(2, name="a", inputs=["input"]),
                          t("concat", name="cat", inputs=["a", "input"], dim=0)], (2,), 1, "concat",
                         ["dim=0", "batch"]),
    "maxpool_padding": ([t("maxpool2d", kernel_size=2, padding=2)], (1, 6, 6), 0, "maxpool2d",
                        ["at most half", "(N, 1, 6, 6)"]),
    "avgpool_too_big": ([t("avgpool2d", kernel_size=4)], (1, 3, 3), 0, "avgpool2d", ["4x4", "3x3"]),
    "batchnorm_rank": ([t("batchnorm")], (3, 4), 0, "batchnorm", ["(N, 3, 4)", "(N, C, H, W)"]),
    "flatten_batch": ([t("flatten", start_dim=0)], (3, 4), 0, "flatten", ["start_dim=0", "batch"]),
    "flatten_end_before_start": ([t("flatten", start_dim=2, end_dim=1)], (3, 4), 0, "flatten",
                                 ["end_dim=1"]),
    "softmax_batch": ([t("softmax", dim=0)], (3,), 0, "softmax", ["dim=0", "batch"]),
    "softmax_out_of_range": ([t("softmax", dim=2)], (3,), 0, "softmax", ["dim=2", "(N, 3)"]),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_shape_mismatch_raises_spec_error(case):
    layers, in_shape, index, kind, parts = MISMATCHES[case]
    with pytest.raises(SpecError) as info:
        plan({"layers": layers}, in_shape)
    err = info.value
    assert (err.index, err.kind) == (index, kind)
    msg = str(err)
    assert msg.startswith(f"layers[{index}] ") and f"({kind})" in msg
    for part in parts:
        assert part in msg, f"{part!r} missing from {msg!r}"
    with pytest.raises(SpecError):
        Model.from_spec({"layers": layers}, in_shape)


DEGENERATE = {
    # name: (layers, input shape, failing index, its type, substrings the message must hold)
    "linear_width_0": ([lin(3)], (0,), 0, "linear", ["input shape (N, 0)", "size 0"]),
    "conv_no_channels": ([conv(2, 1)], (0, 5, 5), 0, "conv2d", ["(N, 0, 5, 5)"]),
    "conv_no_rows": ([conv(2, 1)], (3, 0, 5), 0, "conv2d", ["(N, 3, 0, 5)"]),
    "flatten_first": ([t("flatten"), lin(2)], (3, 0), 0, "flatten", ["(N, 3, 0)"]),
    "batchnorm": ([t("batchnorm")], (0,), 0, "batchnorm", ["(N, 0)"]),
    "relu_then_linear": ([t("relu"), lin(2)], (4, 0), 0, "relu", ["(N, 4, 0)"]),
    "negative": ([lin(3)], (-2,), 0, "linear", ["size -2"]),
    "dag_first_reader": ([lin(2, name="a", inputs=["input"]), lin(2, name="b", inputs=["input"]),
                          t("add", name="s", inputs=["a", "b"])], (0,), 0, "linear", ["'a'", "(N, 0)"]),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_a_dimension_of_size_0_is_a_spec_error_naming_the_layer(case):
    layers, in_shape, index, kind, parts = DEGENERATE[case]
    with pytest.raises(SpecError) as info:
        Model.from_spec({"layers": layers}, in_shape)
    err = info.value
    assert (err.index, err.kind) == (index, kind)
    assert "every dimension must be at least 1" in str(err)
    for part in parts:
        assert part in str(err), f"{part!r} missing from {str(err)!r}"


def test_a_layer_whose_output_would_have_a_0_dim_is_a_spec_error(monkeypatch):
    # no layer of the catalogue maps sizes >= 1 to a 0, so a stand-in that does checks the rule itself
    import engine.planning
    from engine.layers.flatten import Flatten

    class Vanishing(Flatten):
        def infer(self, in_shapes):
            return (0,)

    monkeypatch.setattr(engine.planning, "layer_class", lambda kind: Vanishing)
    with pytest.raises(SpecError, match=r"^layers\[0\] \(flatten\): input shape \(N, 3, 4\) gives output shape "
                                        r"\(N, 0\), with a dimension of size 0"):
        plan({"layers": [t("flatten")]}, (3, 4))


STRUCTURE_ERRORS = {
    "unknown_input": ([lin(3, name="a", inputs=["nope"])], "input 'nope' is not an earlier layer"),
    "later_input": ([lin(3, name="a", inputs=["b"]), lin(3, name="b", inputs=["input"])],
                    "input 'b' is not an earlier layer"),
    "duplicate_name": ([lin(3, name="a", inputs=["input"]), lin(3, name="a")], "name 'a' is already used"),
    "reserved_name": ([lin(3, name="input", inputs=["input"])], "reserved"),
    "softmax_not_last": ([t("softmax"), lin(3)], "softmax is only allowed as the final layer"),
    "merge_one_input": ([lin(3, name="a", inputs=["input"]), t("add", inputs=["a"])],
                        "a merge needs at least 2 inputs"),
    "two_inputs_to_linear": ([lin(3, name="a", inputs=["input"]), lin(3, inputs=["a", "input"])],
                             "takes exactly 1 input"),
    "unused_output": ([lin(3, name="a", inputs=["input"]), lin(3, name="b", inputs=["input"])],
                      "output 'a' is never used"),
    "unknown_type": ([t("conv3d")], "conv3d"),
    "bad_field": ([lin(0)], "out_features"),
}


@pytest.mark.parametrize("case", list(STRUCTURE_ERRORS))
def test_structural_errors_are_validation_errors(case):
    layers, text = STRUCTURE_ERRORS[case]
    with pytest.raises(ValidationError, match=text):
        ModelSpec.model_validate({"layers": layers})


@pytest.mark.parametrize("layers, message", [
    ([{"type": "relu", "name": "a"}, {"type": "relu", "name": "a"}], "already used by layers[0]"),
    ([{"type": "relu", "name": "input"}], "reserved for the model input"),
])
def test_sequential_spec_names_are_checked_too(layers, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModelSpec.model_validate({"layers": layers})


def test_linear_on_a_conv_output_acts_on_the_last_dim_and_the_loss_check_asks_for_a_flatten():
    """As torch.nn.Linear: (N, C, H, W) -> (N, C, H, out). A classifier that forgot its flatten is
    then refused where the output meets the loss, with the hint."""
    from engine.data import check_compatible
    p = plan({"layers": [conv(4, 3), lin(5)]}, (2, 6, 6))
    assert p.output_shape == (4, 4, 5)
    with pytest.raises(ValueError, match="add a flatten and a linear layer at the end"):
        check_compatible("cross_entropy", "classification", 5, p.output_shape)
