"""A multi-process job (`distributed.processes` > 1): its slots, its rank processes, their supervision.

The worker that claimed the job (its Celery task) stays the job's supervisor and keeps its heartbeat:

    slots = rank_slots.reserve(...)        all N of this host's slots in one transaction, or the job goes
                                           back to the queue (nothing half-held); when a worker of another
                                           host takes ranks, what is free here (rank 0 at least), and the
                                           other ranks go to the ranks queue (worker.remote_rank: a rank
                                           not taken or without a slot in time hands the job back)
    store = TCPStore(is_master=True)       the rendezvous, at settings.distributed_store_host, a free port
    N x Popen(python -m worker.rank)       fresh interpreters (spawned, never forked from this process, which
                                           may run inside Celery and holds torch's thread pools)
    watch                                  every rank exited 0: rank 0's outcome file is the job's outcome;
                                           a rank died (SIGKILL, a crash, a lost peer): the others are killed
                                           at once, and all N start again from the last checkpoint, up to
                                           distributed_max_restarts times (as torchrun does)

Cancel: rank 0's own heartbeat reads it, and fit stops every rank at the next step (a checkpoint at an
epoch boundary); the supervisor kills ranks still alive cancel_grace_s after it saw the cancel. A worker
shutdown sends SIGTERM: every rank stops at its next step and the job goes back to the queue.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from pydantic import SecretStr

from core import lifecycle, rank_slots, workers
from core.lifecycle import Claim, JobStatus
from core.settings import Settings
from core.sweeps.study import PRUNED

from .callbacks import SHUTDOWN, Heartbeat
from .remote_rank import NoRemoteSlot, Remote, describe

log = logging.getLogger("chainrule.worker")

POLL_S = 0.1
STOP_GRACE_S = 10.0          # after a cancel or a shutdown, ranks still running then are killed


class RankDied(Exception):
    """A rank process ended without the job's outcome; the launch is over."""


def run_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "ranks" / job_id


def _settings_env(settings: Settings) -> dict[str, str]:
    """This worker's settings as the CHAINRULE_ variables a rank's get_settings() reads (secrets aside:
    the ranks need none, and they keep the environment's own)."""
    secret = {name for name, value in settings if isinstance(value, SecretStr)}
    return {f"CHAINRULE_{name.upper()}": json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            for name, value in settings.model_dump(mode="json").items() if value is not None and name not in secret}


def rank_env(settings: Settings, claimed: Claim, device: str, rank: int, world: int, store: tuple[str, int],
             launch: str, threads: int, folder: Path) -> dict[str, str]:
    """The environment of one `python -m worker.rank` (its CHAINRULE_RANK_* orders and this worker's settings),
    here or on another host's worker (worker.remote_rank); its supervisor is the calling process."""
    return {**os.environ, **_settings_env(settings), "CHAINRULE_RANK_RANK": str(rank),
            "CHAINRULE_RANK_WORLD": str(world),
            "CHAINRULE_RANK_STORE_HOST": store[0], "CHAINRULE_RANK_STORE_PORT": str(store[1]),
            "CHAINRULE_RANK_LAUNCH": launch, "CHAINRULE_RANK_JOB": claimed.job_id,
            "CHAINRULE_RANK_ATTEMPT": str(claimed.attempt), "CHAINRULE_RANK_REQUESTED": claimed.requested_device,
            "CHAINRULE_RANK_QUEUE": claimed.queue, "CHAINRULE_RANK_DEVICE": device,
            "CHAINRULE_RANK_THREADS": str(threads), "CHAINRULE_RANK_OUTCOME": str(folder / "outcome.json"),
            "CHAINRULE_RANK_SUPERVISOR": str(os.getpid())}


def spawn_rank(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "worker.rank"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)   # the worker's Ctrl-C is not theirs


def _spawn(settings: Settings, claimed: Claim, device: torch.device, n: int, world: int, port: int, launch: str,
           folder: Path) -> list[subprocess.Popen]:
    """Ranks 0..n-1 of `world` here (the others are on other hosts)."""
    threads = max(1, torch.get_num_threads() // n)
    return [spawn_rank(rank_env(settings, claimed, device.type, rank, world, (settings.distributed_store_host, port),
                                launch, threads, folder), folder / f"rank{rank}.log") for rank in range(n)]


def _kill(procs: list[subprocess.Popen], sig: int = signal.SIGKILL) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass


def _watch(procs: list[subprocess.Popen], heartbeat: Heartbeat, remote=None) -> None:
    """Until every rank (here and, through `remote`, on other hosts) has exited 0; RankDied (the others
    killed, or aborted) as soon as one ends otherwise; remote_rank.NoRemoteSlot when a remote rank could
    not start."""
    stop_sent_at = None
    while True:
        codes = [proc.poll() for proc in procs]
        far = remote.poll() if remote is not None else {}
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        failed_far = [(rank, state) for rank, state in far.items() if state not in (None, 0)]
        if failed or failed_far:
            _kill(procs)
            for proc in procs:
                proc.wait()
            raise RankDied(", ".join(describe(rank, state) for rank, state in failed + failed_far))
        if all(code == 0 for code in codes) and all(state == 0 for state in far.values()):
            return
        stopping = SHUTDOWN.is_set() or heartbeat.lost or heartbeat.cancel_requested
        if stopping and stop_sent_at is None:
            stop_sent_at = time.monotonic()
            _kill(procs, signal.SIGTERM)        # each stops at its next step (worker.rank's handler), and
        elif stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_GRACE_S:   # stops the others
            _kill(procs)
            if remote is not None:
                remote.abort()
        time.sleep(POLL_S)


def _launch(settings: Settings, claimed: Claim, device: torch.device, n: int, here: int, launch: int,
            heartbeat: Heartbeat) -> dict:
    """One start of all N ranks, 0..here-1 on this host and the others sent to workers of other hosts;
    rank 0's outcome, RankDied, or NoRemoteSlot."""
    folder = run_dir(settings, claimed.job_id) / f"attempt{claimed.attempt}-launch{launch}"
    folder.mkdir(parents=True, exist_ok=True)
    store = dist.TCPStore(settings.distributed_store_host, 0, world_size=None, is_master=True,
                          timeout=timedelta(seconds=settings.distributed_init_timeout_s), wait_for_workers=False)
    launch_id = f"{claimed.attempt}-{launch}"
    remote = Remote(settings, store, launch_id, range(here, n)) if here < n else None
    procs = _spawn(settings, claimed, device, here, n, store.port, launch_id, folder)
    if remote is not None:
        remote.send(claimed, device.type, n, store.port)
    (folder / "pids.json").write_text(json.dumps([p.pid for p in procs]))    # for an operator (and the chaos test)
    log.info("job %s: launch %d of %d ranks (%d here, pids %s), store %s:%d", claimed.job_id, launch, n, here,
             [p.pid for p in procs], settings.distributed_store_host, store.port)
    try:
        _watch(procs, heartbeat, remote)
    finally:
        _kill(procs)
        if remote is not None:
            remote.abort()
    outcome = folder / "outcome.json"
    if not outcome.exists():
        raise RankDied("rank 0 exited without an outcome")
    return json.loads(outcome.read_text())


def _hand_back(settings: Settings, claimed: Claim, heartbeat: Heartbeat) -> str:
    heartbeat.stop()
    time.sleep(settings.heartbeat_interval_s)   # not straight back into this worker's hands
    released = lifecycle.release(settings, claimed)
    return "lost" if released is None else str(released)


def run(settings: Settings, claimed: Claim, device: torch.device, heartbeat: Heartbeat, n: int, ended, fail) -> str:
    """Reserve, launch (and relaunch), and end the job through `ended` / `fail` (worker.runner's)."""
    if device.type == "cuda" and n > torch.cuda.device_count():   # NCCL: one GPU per rank
        return fail(settings, claimed, heartbeat, "invalid_job", f"distributed.processes is {n} but this worker "
                    f"has {torch.cuda.device_count()} GPU(s); NCCL needs one GPU per process: use at most "
                    f"{torch.cuda.device_count()}, or device cpu")
    here = rank_slots.this_host(settings)    # with workers of other hosts: at least rank 0 here, the rest there
    at_least = 1 if n > 1 and workers.take_ranks_elsewhere(settings, here) else n
    slots = rank_slots.reserve(settings, claimed.job_id, claimed.attempt, n, at_least=at_least)
    if slots is None:
        log.info("job %s: %d rank slot(s) are not free on %s; handing the job back", claimed.job_id, at_least, here)
        return _hand_back(settings, claimed, heartbeat)
    try:
        outcome, died = None, None
        for launch in range(settings.distributed_max_restarts + 1):
            try:
                outcome = _launch(settings, claimed, device, n, len(slots), launch, heartbeat)
                break
            except RankDied as exc:
                died = str(exc)
                log.warning("job %s: %s; launch %d ended", claimed.job_id, died, launch)
                if SHUTDOWN.is_set() or heartbeat.lost or heartbeat.cancel_requested:
                    break
    except NoRemoteSlot as exc:
        log.info("job %s: %s; handing the job back", claimed.job_id, exc)
        rank_slots.release(settings, claimed.job_id, claimed.attempt)
        return _hand_back(settings, claimed, heartbeat)
    finally:
        rank_slots.release(settings, claimed.job_id, claimed.attempt)
    return _end(settings, claimed, heartbeat, outcome, died, ended, fail)


def _end(settings, claimed, heartbeat, outcome: dict | None, died: str | None, ended, fail) -> str:
    if heartbeat.lost:
        return "lost"
    if outcome is None:
        if heartbeat.cancel_requested:
            return ended(settings, claimed, heartbeat, JobStatus.CANCELLED)
        if SHUTDOWN.is_set():
            heartbeat.stop()
            released = lifecycle.release(settings, claimed)
            return "lost" if released is None else str(released)
        return fail(settings, claimed, heartbeat, "rank_failed",
                    f"a rank process died ({died}) {settings.distributed_max_restarts + 1} time(s); "
                    f"see the rank logs under {run_dir(settings, claimed.job_id)}")
    status, summary = outcome["status"], outcome.get("summary")
    if status == "failed":
        return fail(settings, claimed, heartbeat, outcome["code"], outcome["message"])
    if status == "cancelled":
        if outcome.get("pruned") is not None:
            return ended(settings, claimed, heartbeat, JobStatus.CANCELLED, result=summary, error_code=PRUNED,
                         error_message=outcome["pruned"])
        if outcome.get("cancel_requested") or heartbeat.cancel_requested:
            return ended(settings, claimed, heartbeat, JobStatus.CANCELLED, result=summary)
        heartbeat.stop()
        released = lifecycle.release(settings, claimed)
        return "lost" if released is None else str(released)
    return ended(settings, claimed, heartbeat, JobStatus.SUCCEEDED, result=summary,
                 weights_path=outcome["weights_path"], artifact_bytes=outcome["artifact_bytes"], fraction=1.0,
                 epoch=outcome["epochs"], step=outcome["steps"], error_code=None, error_message=None)
