"""The CLI's rules for writing API records as text (chainrule/commands/readable.py, common.plain_table),
in process: no value is ever a Python repr, long series are summarised, a table row is one line.
test_cli_output.py runs the commands themselves against a server."""
from __future__ import annotations

import re

from chainrule.commands import common
from chainrule.commands.readable import call, flatten, inline


def test_a_spec_reads_as_a_call_and_nulls_are_left_out():
    assert call({"type": "adam", "lr": 0.01, "betas": [0.9, 0.999], "amsgrad": False, "foreach": None}) == \
        "adam(lr=0.01, betas=(0.9, 0.999), amsgrad=false)"
    assert inline({"type": "relu"}) == "relu"
    assert inline({"standardize": "none", "columns": None}) == "standardize none"


def test_long_and_nested_series_are_counted_with_their_range_not_spelled_out():
    alphas = [-0.5 + i / 12 for i in range(25)]
    assert inline(alphas) == "25 values, from -0.5 to 1.5"
    assert inline([[3.0, 1.0], [2.0, 0.5], [4.0, 9.0]]) == "3×2 values, min 0.5, max 9"
    assert inline([1, 2, 3]) == "1, 2, 3"
    assert inline({"rules": {"a": {"threshold": 1}, "b": {"threshold": 2}}, "stop_on": []}) == \
        "rules (2 entries), stop_on -"


def test_nested_results_flatten_to_dotted_names_and_no_value_is_a_repr():
    result = {"samples": 128, "hessian": {"verdict": "saddle", "largest": {"value": 1.1123, "converged": True},
                                          "density": {"eigenvalues": list(range(201)), "mass": None}}}
    assert flatten(result) == [("samples", "128"), ("hessian.verdict", "saddle"),
                               ("hessian.largest.value", "1.112"), ("hessian.largest.converged", "true"),
                               ("hessian.density.eigenvalues", "201 values, from 0 to 200"),
                               ("hessian.density.mass", "-")]
    assert not any(re.search(r"[{}]|'\w+':", value) for _, value in flatten(result))
    assert common.cell({"code": "pruned", "message": None}) == "code pruned"
    assert common.cell([]) == common.cell("") == common.cell(None) == "-"    # no blank cell: columns stay put


def test_a_plain_table_is_one_aligned_line_per_row(capsys):
    common.plain_table([["7", "a message\nover two lines"], ["12", "short"]], ["epoch", "what"], "2 finding(s)")
    assert capsys.readouterr().out.splitlines() == ["2 finding(s)", "epoch  what", "7      a message over two lines",
                                                    "12     short"]


def test_a_models_layers_read_one_per_line_and_a_repeated_block_indents_its_own():
    from chainrule.commands.job_view import model_lines

    layers = [{"name": "wte", "type": "embedding", "num_embeddings": 85, "embedding_dim": 128},
              {"name": "h", "type": "repeat", "times": 2, "layers": [
                  {"name": "ln_1", "type": "layernorm"},
                  {"name": "res_1", "type": "add", "inputs": ["input", "ln_1"]}]},
              {"type": "linear", "out_features": 85, "bias": False, "inputs": None}]
    assert model_lines(layers) == ["wte  embedding(num_embeddings=85, embedding_dim=128)",
                                   "h  repeat(times=2) of:",
                                   "    ln_1  layernorm",
                                   "    res_1  add  <- input, ln_1",
                                   "2  linear(out_features=85, bias=false)"]
