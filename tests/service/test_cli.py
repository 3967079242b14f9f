"""The `chainrule` CLI as a user runs it: real subprocesses, a fresh data dir each."""
from __future__ import annotations

import os
import subprocess

import pytest
import torch

from e2e_support import chainrule_cmd

pytestmark = pytest.mark.timeout(120)


def run(tmp_path, *args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
    full_env.update({"CHAINRULE_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run(chainrule_cmd() + list(args), env=full_env, capture_output=True, text=True, timeout=100)


def test_keys_create_prints_the_key_last_and_it_is_stored_hashed(tmp_path):
    from chainrule.db import get_sessionmaker
    from chainrule.keys import find_key
    from chainrule.settings import Settings

    out = run(tmp_path, "keys", "create", "alice")      # runs the migrations on a fresh data dir
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("cr_") and len(key) > 40
    settings = Settings(data_dir=tmp_path / "data")
    with get_sessionmaker(settings.database_url)() as s:
        assert find_key(s, settings, key).name == "alice"
    listed = run(tmp_path, "keys", "list")
    assert "alice" in listed.stdout and key not in listed.stdout


def test_migrate_then_production_settings_refuse_the_placeholder_pepper(tmp_path):
    assert run(tmp_path, "migrate").returncode == 0
    out = run(tmp_path, "migrate", CHAINRULE_ENVIRONMENT="production")
    assert out.returncode == 2 and "CHAINRULE_KEY_PEPPER" in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_worker_device_cuda_without_a_gpu_fails_clearly(tmp_path):
    out = run(tmp_path, "worker", "--device", "cuda")
    assert out.returncode == 2
    assert "--device cuda" in out.stderr and "no CUDA device" in out.stderr
    out = run(tmp_path, "worker", "--queues", "gpu", "--device", "cpu")
    assert out.returncode == 2 and "gpu" in out.stderr


def test_the_worker_side_never_imports_fastapi_or_the_api():
    """DESIGN.md's dependency direction: worker/ imports engine/ and chainrule/, never api/."""
    import sys
    code = ("import sys, chainrule.cli, chainrule.janitor, worker.app, worker.runner; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'api', 'starlette', 'uvicorn')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
