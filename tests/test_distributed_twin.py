"""The engine's data-parallel step with per-rank batchnorm equals torch's DistributedDataParallel on the
twin, 2 gloo ranks on the same shards, float64, 10 steps of SGD with momentum: parameters on every
rank and rank 0's running statistics to 1e-10."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "engine"))
from parallel_ranks import spawn_ranks  # noqa: E402

from distributed_twin_ranks import equal_to_ddp  # noqa: E402


def test_per_rank_batchnorm_equals_torch_ddp_on_the_twin(tmp_path):
    out = tmp_path / "found.json"
    spawn_ranks(equal_to_ddp, 2, str(out))
    assert json.loads(out.read_text())["worst"] <= 1e-10
