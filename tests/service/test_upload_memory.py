"""Rejected uploads leave the API process no larger (issue 8, point 6): a real `chainrule api`
process takes a 15 MB CSV that fails on its last line, again and again; its resident size stays
where it was. (Memory that outlived a rejected upload once made a fuzzing run grow the API from
283 MB to 1.5 GB: the parser's arrays, kept alive by the error's traceback.)"""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(180)
UPLOADS = 6


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _rejected_csv(rows: int) -> bytes:
    values = np.random.default_rng(0).normal(size=(rows, 8))
    body = "\n".join(",".join(f"{v:.6f}" for v in row) + ",1" for row in values)
    return ("a,b,c,d,e,f,g,h,t\n" + body + "\n1,2,3,4,5,6,7,x,1\n").encode()   # line rows+2: not a number


def test_the_api_stays_the_same_size_across_rejected_uploads(stack_factory):
    stack = stack_factory()
    stack.create_key_in_process()
    api = stack.start_api()
    stack.wait_api()
    small, large = _rejected_csv(100), _rejected_csv(200_000)
    assert len(large) > 14_000_000

    def upload(content: bytes) -> None:
        r = stack.http.post("/v1/datasets", files={"file": ("bad.csv", content)})
        assert r.status_code == 422 and "is not a number" in r.text, r.text

    upload(small)                       # imports and first-use caches, before the baseline
    before = _rss_mb(api.pid)
    sizes = []
    for _ in range(UPLOADS):
        upload(large)
        sizes.append(round(_rss_mb(api.pid) - before, 1))
    print("API RSS above the baseline after each upload, MB:", sizes)
    assert max(sizes) < 60, sizes       # megabytes above the baseline, after each upload (main: 100+)
