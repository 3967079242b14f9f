"""Data parallelism (engine.train.distributed) equals one process on the global batch, in float64:
2 and 4 gloo ranks spawned on loopback, each stepping beside a single-process model and compared with
it after every step (torch's own DDP test pattern)."""
from __future__ import annotations

import json

import pytest

from parallel_ranks import ADAMW, SGD, fit_equal, spawn_ranks, steps_equal

CASES = [
    ("mlp_sgd", "mlp", SGD, {}),
    ("mlp_adamw", "mlp", ADAMW, {}),
    ("cnn_bn_sgd", "cnn_bn", SGD, {"sync_batchnorm": True}),
    ("cnn_bn_adamw", "cnn_bn", ADAMW, {"sync_batchnorm": True}),
    # a bucket of 7 float64s: smaller than any weight's gradient, so layers span several buckets
    ("mlp_small_buckets", "mlp", SGD, {"bucket_bytes": 56}),
    ("cnn_bn_small_buckets", "cnn_bn", ADAMW, {"sync_batchnorm": True, "bucket_bytes": 56}),
    ("mlp_clipped", "mlp", SGD, {"grad_clip_norm": 0.05}),          # the average is complete before clipping
    ("mlp_no_overlap", "mlp", SGD, {"overlap": False}),
    # 10 rows on 4 ranks: shards of 3, 3, 2, 2; the shares weight gradients and batchnorm's sums
    ("cnn_bn_uneven", "cnn_bn", SGD, {"sync_batchnorm": True, "batch": 10}),
]


@pytest.mark.parametrize("world", [2, 4])
def test_ten_steps_equal_one_process_on_the_global_batch(world, tmp_path):
    out = tmp_path / "found.json"
    spawn_ranks(steps_equal, world, CASES, str(out))
    found = json.loads(out.read_text())
    assert set(found) == {name for name, *_ in CASES}
    assert max(found.values()) <= 1e-12, found


def test_fit_on_two_ranks_equals_fit_in_one_process(tmp_path):
    out = tmp_path / "found.json"
    spawn_ranks(fit_equal, 2, str(out))
    found = json.loads(out.read_text())
    assert found["weights"] <= 1e-12 and found["curves"] <= 1e-12, found
