"""The `chainrule` CLI as a user runs it: real subprocesses, a fresh data dir each."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from e2e_support import (CEILING_S, HANG_GUARD_S, Exited, chainrule_cmd, children_of, free_port, pid_alive,
                         stop_process, wait_for)

pytestmark = pytest.mark.timeout(HANG_GUARD_S)


def run(tmp_path, *args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
    full_env.update({"CHAINRULE_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run(chainrule_cmd() + list(args), env=full_env, capture_output=True, text=True, timeout=CEILING_S)


def test_keys_create_prints_the_key_last_and_it_is_stored_hashed(tmp_path):
    from core.db import get_sessionmaker
    from core.keys import find_key
    from core.settings import Settings

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
    code = ("import sys, chainrule.cli, core.reconciler, worker.app, worker.runner; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'api', 'starlette', 'uvicorn')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CEILING_S)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_admin_commands_and_the_client_load_no_torch(tmp_path):
    """`keys`, `migrate` and the client commands touch the database or HTTP only: torch (a second of
    a 2.5 s start) stays unloaded, and so does every torch-bound part of the engine."""
    code = ("import sys; from chainrule.cli import main\n"
            "for args in (['migrate'], ['keys', 'create', 'a'], ['keys', 'list'], ['jobs', '--help']):\n"
            "    sys.argv = ['chainrule', *args]\n"
            "    try: main()\n"
            "    except SystemExit as e: assert not e.code, (args, e.code)\n"
            "sys.stderr.write(repr(('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('engine.')))))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CEILING_S,
                         env={**env, "CHAINRULE_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stderr.endswith("(False, ['engine.tasks'])"), out.stderr[-3000:]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_api_workers_share_one_port_and_stop_with_the_supervisor(tmp_path):
    import httpx

    assert run(tmp_path, "migrate").returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
    env["CHAINRULE_DATA_DIR"] = str(tmp_path / "data")
    port, log = free_port(), tmp_path / "api.log"
    proc = subprocess.Popen(chainrule_cmd() + ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        def healthy():
            if proc.poll() is not None:
                raise Exited(log.read_text())
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        wait_for(healthy, CEILING_S, 0.1, "chainrule api --workers 2 to answer /healthz")

        def two_servers():   # uvicorn's workers are multiprocessing spawn children
            found = [p for p in children_of(proc.pid) if "spawn_main" in _cmdline(p)]
            return found if len(found) == 2 else None
        servers = wait_for(two_servers, CEILING_S, 0.1, "two server processes")
        assert "GET /healthz" not in log.read_text()            # no access log unless --access-log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=CEILING_S) == 0, log.read_text()
        wait_for(lambda: not any(pid_alive(p) for p in servers), CEILING_S, 0.1, "the server processes to exit")
    finally:
        stop_process(proc)
