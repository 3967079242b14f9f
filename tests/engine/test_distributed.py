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


def test_buckets_tile_the_gradient_buffer_and_wait_for_the_lowest_layer_they_hold():
    """Buckets from the buffer's end; each is ready once the backward has passed every layer writing
    into it: in a DAG and with a weight tied to an earlier embedding, the lowest such layer."""
    from engine import Model
    from engine.train.distributed import bucket_plan
    spec = {"layers": [{"type": "embedding", "num_embeddings": 11, "embedding_dim": 4, "name": "wte",
                        "inputs": ["input"]},
                       {"type": "linear", "out_features": 4, "name": "a", "inputs": ["wte"]},
                       {"type": "relu", "name": "r", "inputs": ["a"]},
                       {"type": "add", "name": "s", "inputs": ["r", "wte"]},
                       {"type": "linear", "out_features": 11, "bias": False, "tie_to": "wte", "name": "head",
                        "inputs": ["s"]}]}
    model = Model.from_spec(spec, (5,))
    buckets = bucket_plan(model, bucket_bytes=4 * 7)               # 7 float32 elements each
    covered = sorted((lo, hi) for lo, hi, _ in buckets)
    assert covered[0][0] == 0 and covered[-1][1] == model.flat_grads.numel()
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    assert [lo for lo, _, _ in buckets] == sorted((lo for lo, _, _ in buckets), reverse=True)
    table = 11 * 4                                                # the embedding's (and the head's) weight
    for lo, hi, ready in buckets:
        assert ready == (0 if lo < table else 1)
    whole = bucket_plan(model, bucket_bytes=25 * 2**20)
    assert whole == [(0, model.flat_grads.numel(), 0)]
