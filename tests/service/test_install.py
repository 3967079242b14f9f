"""The README's two commands on a fresh machine: a virtual environment in the repository, the CPU
torch build where there is no GPU, waiting for apt's lock, one data dir whatever the working
directory, and `scripts/serve.sh` answering with offline docs. Real pip, real apt, real HTTP."""
from __future__ import annotations

import fcntl
import os
import shutil
import site
import signal
import subprocess
import sys
import threading
import time
import venv
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from e2e_support import CEILING_S, HANG_GUARD_S, Exited, free_port, stop_process, wait_for

pytestmark = pytest.mark.timeout(HANG_GUARD_S)
REPO = Path(__file__).resolve().parents[2]
IN_REPO_VENV = Path(sys.prefix).resolve() == (REPO / ".venv").resolve()
HAS_GPU = shutil.which("nvidia-smi") is not None or any(Path("/proc/driver/nvidia/gpus").glob("*"))


class Index(BaseHTTPRequestHandler):
    """A package index that has nothing, and remembers what it was asked for."""

    def __init__(self, log, *args, **kwargs):
        self.log = log
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 - http.server's name
        self.log.append((time.monotonic(), self.path))
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def indexes():
    """Two loopback package indexes: (cpu, default), each a (url, request log)."""
    servers, out = [], []
    for _ in range(2):
        log: list = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Index, log))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out.append((f"http://127.0.0.1:{server.server_port}/simple", log))
    yield out
    for server in servers:
        server.shutdown()


def env_seeing_this_one(env_dir: Path) -> Path:
    """A fresh virtual environment that also sees the packages of the one running these tests.

    `system_site_packages=True` would show it the *system* Python's packages, which on a fresh machine
    (or one whose Python refuses global installs) hold neither torch nor typer: the suite runs in
    .venv, so a .pth file points the new environment at .venv's site-packages instead."""
    venv.create(env_dir, with_pip=False)
    purelib = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "suite-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env_dir


def pip_env(default_index: str, **extra) -> dict:
    """pip with no config files (no find-links, no constraints) and `default_index` as its index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CHAINRULE_"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": default_index, "PIP_NO_CACHE_DIR": "1", **extra}


@pytest.mark.skipif(HAS_GPU, reason="checks the machine without a GPU")
def test_without_a_gpu_torch_comes_from_the_cpu_index_first(tmp_path, indexes):
    (cpu_url, cpu_log), (default_url, default_log) = indexes
    venv.create(tmp_path / "env", with_pip=True)
    out = subprocess.run(["bash", "scripts/install_torch.sh", str(tmp_path / "env" / "bin" / "python")], cwd=REPO,
                         env=pip_env(default_url, TORCH_CPU_INDEX=cpu_url), capture_output=True, text=True,
                         timeout=CEILING_S)
    # neither index has torch, so the install fails; what matters is which was asked, in what order
    assert out.returncode != 0
    asked_cpu = [t for t, path in cpu_log if "/torch/" in path]
    asked_default = [t for t, path in default_log if "/torch/" in path]
    assert asked_cpu and asked_default and max(asked_cpu) < min(asked_default), (cpu_log, default_log)
    assert "no NVIDIA GPU" in out.stdout and cpu_url in out.stdout


def test_a_torch_already_in_the_environment_is_kept(tmp_path, indexes):
    (cpu_url, cpu_log), (default_url, default_log) = indexes
    env_seeing_this_one(tmp_path / "env")   # sees the torch these tests run with
    out = subprocess.run(["bash", "scripts/install_torch.sh", str(tmp_path / "env" / "bin" / "python")], cwd=REPO,
                         env=pip_env(default_url, TORCH_CPU_INDEX=cpu_url), capture_output=True, text=True,
                         timeout=CEILING_S)
    assert out.returncode == 0 and "keeping it" in out.stdout, out.stdout + out.stderr
    assert cpu_log == [] and default_log == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("apt-get"), reason="needs root and apt")
def test_apt_waits_for_another_apt_instead_of_failing():
    """While something holds dpkg's lock, the scripts' apt_get waits and then succeeds."""
    lock = os.open("/var/lib/dpkg/lock-frontend", os.O_RDWR | os.O_CREAT)
    fcntl.lockf(lock, fcntl.LOCK_EX)
    held_until = time.monotonic() + 3
    threading.Timer(3, lambda: (fcntl.lockf(lock, fcntl.LOCK_UN), os.close(lock))).start()
    # an install of an installed package changes nothing, but takes the lock like any install
    out = subprocess.run(["bash", "-c", ". scripts/lib.sh; apt_get install -y --no-upgrade dpkg"], cwd=REPO,
                         capture_output=True, text=True, timeout=CEILING_S)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() >= held_until


def chainrule_in(env_dir: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`chainrule ...` run by the Python of the environment env_dir, from cwd."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CHAINRULE_", "XDG_"))}
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(env_dir / "bin" / "python"), "-m", "chainrule.cli", *args], cwd=cwd,
                          env={**base, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True,
                          timeout=CEILING_S)


def test_the_data_dir_is_the_same_from_every_directory(tmp_path):
    env_dir = env_seeing_this_one(tmp_path / "env")
    home = {"HOME": str(tmp_path / "home")}
    # no configuration at all: a per-user directory, not the working directory
    made = chainrule_in(env_dir, tmp_path / "a", "keys", "create", "alice", **home)
    assert made.returncode == 0, made.stderr
    listed = chainrule_in(env_dir, tmp_path / "b", "keys", "list", **home)
    assert "alice" in listed.stdout
    assert (tmp_path / "home" / ".local" / "share" / "chainrule" / "chainrule.sqlite").exists()
    assert not (tmp_path / "a" / ".chainrule").exists()
    # the installation's env file (what scripts/install.sh writes into .venv) names the data dir
    (env_dir / "chainrule.env").write_text(f"CHAINRULE_DATA_DIR={tmp_path / 'repo-data'}\n")
    chainrule_in(env_dir, tmp_path / "c", "keys", "create", "bob", **home)
    listed = chainrule_in(env_dir, tmp_path / "d", "keys", "list", **home).stdout
    assert "bob" in listed and "alice" not in listed
    assert (tmp_path / "repo-data" / "chainrule.sqlite").exists()


needs_repo_venv = pytest.mark.skipif(not IN_REPO_VENV and not os.environ.get("CI"),
                                     reason="runs where scripts/test.sh runs the suite: in the repository's .venv")


@needs_repo_venv
def test_the_suite_runs_in_the_repositorys_virtual_environment():
    assert IN_REPO_VENV, f"tests run in {sys.prefix}, not in {REPO / '.venv'} (run them with scripts/test.sh)"
    assert (REPO / ".venv" / "chainrule.env").read_text().strip() == f"CHAINRULE_DATA_DIR={REPO / '.chainrule'}"
    assert ".venv" in (REPO / ".gitignore").read_text()
    # what the suite imports comes from .venv alone, never from the system Python's packages
    assert "include-system-site-packages = false" in (REPO / ".venv" / "pyvenv.cfg").read_text()
    assert not any(p.startswith(sys.base_prefix) and "site-packages" in p for p in sys.path), sys.path


@needs_repo_venv
def test_serve_sh_starts_says_where_the_data_is_and_serves_docs_offline(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRULE_")}
    env.update({"PORT": str(port), "CHAINRULE_DATA_DIR": str(tmp_path / "data")})
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=REPO, env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up():
            if proc.poll() is not None:
                raise Exited(log.read_text())
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        wait_for(up, CEILING_S, 0.2, "scripts/serve.sh to answer /healthz")
        docs = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=CEILING_S).text
        assert "swagger-ui" in docs and "http://" not in docs and "https://" not in docs
        text = log.read_text()
        assert f"data in {tmp_path / 'data'}" in text and "foreground" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        stop_process(proc, signal.SIGTERM, 30)
