"""Ranks on other hosts: both ends of the `chainrule.rank` task (issue 19, across machines).

The supervisor (worker.ranks, on the worker that claimed the job) runs the ranks its host has slots for and
sends each other rank as a task on the `ranks` queue, with an `order`:

    {job, attempt, requested, queue, device, launch, rank, world, store_host, store_port, host}

A worker of the supervisor's own host (`host`: its rank_slots host, which had no slot left) that takes
an order of a launch still on puts it back on the queue after PASS_ON_S, for a worker of another host.

The worker that takes it (`task`) talks to the supervisor only through the launch's TCPStore, at the
supervisor's advertised address (settings.distributed_store_host there):

    launch                   the launch this store is for (set before any order is sent); a late task that
                             finds another launch (or no store) does nothing
    beat/<launch>/<rank>     a counter the taker adds 1 to every BEAT_S, from the moment it took the task
    exit/<launch>/<rank>     how the rank ended: its exit code ("0", "-9", ...), or "noslot: ..." when no slot
                             of the taker's host was free within distributed_remote_wait_s, or "error: ..."
    abort/<launch>           set by the supervisor: the taker kills its rank at once

The taker reserves one slot of its host (core.rank_slots, all or nothing as ever), spawns
`python -m worker.rank` with worker.ranks' environment, and kills it when the abort key is set or the
store is gone (the supervisor died). The supervisor (`Remote`) counts a rank dead when its exit is not 0 or
its beat is older than distributed_remote_stale_s (its worker was SIGKILLed), and a launch impossible when
a rank was not taken, or found no slot, within distributed_remote_wait_s: nothing waits forever.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from core import broker, rank_slots
from core.lifecycle import Claim
from core.settings import Settings

from .callbacks import SHUTDOWN

log = logging.getLogger("chainrule.worker")

BEAT_S = 1.0
POLL_S = 0.1
CONNECT_S = 10.0         # a store not reachable within this is a launch that is over
PASS_ON_S = 0.5
ORDER_KEYS = ("job", "attempt", "requested", "queue", "device", "launch", "rank", "world", "store_host",
              "store_port", "host")


class NoRemoteSlot(Exception):
    """A remote rank was not taken, or found no slot, in time: the launch cannot start (hand the job back)."""


def beat_key(launch: str, rank: int) -> str:
    return f"beat/{launch}/{rank}"


def exit_key(launch: str, rank: int) -> str:
    return f"exit/{launch}/{rank}"


def abort_key(launch: str) -> str:
    return f"abort/{launch}"


# -- the supervisor's end

class Remote:
    """The ranks of one launch that run on other hosts, seen through the launch's store."""

    def __init__(self, settings: Settings, store: dist.TCPStore, launch: str, ranks: range):
        self.settings, self.store, self.launch, self.ranks = settings, store, launch, ranks
        self.sent_at = time.monotonic()
        self.beats = {rank: (0, self.sent_at) for rank in ranks}    # rank -> (last count, when it changed)

    def send(self, claimed: Claim, device: str, world: int, port: int) -> None:
        self.store.set("launch", self.launch)
        for rank in self.ranks:
            broker.send_rank(self.settings, {
                "job": claimed.job_id, "attempt": claimed.attempt, "requested": claimed.requested_device,
                "queue": claimed.queue, "device": device, "launch": self.launch, "rank": rank, "world": world,
                "store_host": self.settings.distributed_store_host, "store_port": port,
                "host": rank_slots.this_host(self.settings)})
        self.sent_at = time.monotonic()
        self.beats = {rank: (0, self.sent_at) for rank in self.ranks}

    def poll(self) -> dict[int, int | str | None]:
        """rank -> None (running or not yet taken), 0 (ended well) or why it failed; NoRemoteSlot when one
        was not taken or found no slot in time."""
        now, states = time.monotonic(), {}
        for rank in self.ranks:
            if self.store.check([exit_key(self.launch, rank)]):
                ended = self.store.get(exit_key(self.launch, rank)).decode()
                if ended.startswith("noslot"):
                    raise NoRemoteSlot(f"rank {rank}: {ended}")
                states[rank] = 0 if ended == "0" else ended
                continue
            count = self.store.add(beat_key(self.launch, rank), 0)
            last, since = self.beats[rank]
            if count != last:
                self.beats[rank] = (count, now)
            elif count == 0 and now - since > self.settings.distributed_remote_wait_s:
                raise NoRemoteSlot(f"no worker took rank {rank} from the {broker.RANKS_QUEUE} queue within "
                                   f"{self.settings.distributed_remote_wait_s:g} s (distributed_remote_wait_s)")
            elif count > 0 and now - since > self.settings.distributed_remote_stale_s:
                states[rank] = f"no heartbeat for {now - since:.1f} s (its worker is gone)"
                continue
            states[rank] = None
        return states

    def abort(self) -> None:
        try:
            self.store.set(abort_key(self.launch), "1")
        except (RuntimeError, dist.DistStoreError):   # the store is going: the takers see it gone
            pass


def describe(rank: int, state: int | str) -> str:
    """How a rank ended: an exit code (a local Popen's, or as a taker wrote it) or a reason."""
    if isinstance(state, int) or state.lstrip("-").isdigit():
        code = int(state)
        return f"rank {rank} exited with {code}" if code > 0 else f"rank {rank} was killed by signal {-code}"
    return f"rank {rank} {state}"


# -- the taker's end (the chainrule.rank task)

def valid_order(order) -> bool:
    return isinstance(order, dict) and all(key in order for key in ORDER_KEYS)


def _beating(store: dist.TCPStore, key: str, stop: threading.Event, gone: threading.Event) -> None:
    while not stop.is_set():
        try:
            store.add(key, 1)
        except (RuntimeError, dist.DistStoreError):
            gone.set()
            return
        stop.wait(BEAT_S)


def _connect(order: dict) -> dist.TCPStore:
    return dist.TCPStore(order["store_host"], int(order["store_port"]), world_size=None, is_master=False,
                         timeout=timedelta(seconds=CONNECT_S))


def task(settings: Settings, order: dict, device: torch.device) -> str:
    """Run one rank of another host's job until it ends or its supervisor aborts it."""
    launch, rank = str(order["launch"]), int(order["rank"])
    tag = f"job {order['job']} launch {launch} rank {rank}"
    try:
        store = _connect(order)
        if store.get("launch").decode() != launch or store.check([abort_key(launch)]):
            log.info("%s: the launch is over; nothing to do", tag)
            return "stale"
        if order["host"] == rank_slots.this_host(settings):    # while the launch lasts, and no longer
            time.sleep(PASS_ON_S)
            broker.send_rank(settings, order)
            return "passed on"
        beat_store = _connect(order)     # a connection of its own for the beat thread
    except (RuntimeError, dist.DistStoreError) as exc:
        log.info("%s: its store is gone (%s); nothing to do", tag, exc)
        return "stale"
    stop, gone = threading.Event(), threading.Event()
    beater = threading.Thread(target=_beating, args=(beat_store, beat_key(launch, rank), stop, gone), daemon=True)
    beater.start()
    claimed = Claim(order["job"], int(order["attempt"]), order["requested"], order["queue"])
    try:
        return _run(settings, order, device, claimed, store, gone, tag)
    except (RuntimeError, dist.DistStoreError) as exc:
        log.warning("%s: lost its store (%s)", tag, exc)
        return "lost"
    finally:
        stop.set()


def _report(store: dist.TCPStore, launch: str, rank: int, ended: str) -> str:
    store.set(exit_key(launch, rank), ended)
    return ended


def _run(settings: Settings, order: dict, device: torch.device, claimed: Claim, store: dist.TCPStore,
         gone: threading.Event, tag: str) -> str:
    from .ranks import rank_env, run_dir, spawn_rank     # worker.ranks imports this module

    launch, rank = str(order["launch"]), int(order["rank"])
    if order["device"] != device.type:
        return _report(store, launch, rank, f"error: the job's ranks train on {order['device']} but the worker "
                       f"on {rank_slots.this_host(settings)} trains on {device.type}")
    deadline = time.monotonic() + settings.distributed_remote_wait_s
    while (slots := rank_slots.reserve(settings, claimed.job_id, claimed.attempt, 1)) is None:
        if store.check([abort_key(launch)]) or gone.is_set():
            return "aborted"
        if time.monotonic() > deadline:
            return _report(store, launch, rank, f"noslot: no rank slot of {rank_slots.this_host(settings)} was "
                           f"free within {settings.distributed_remote_wait_s:g} s")
        time.sleep(0.5)
    proc = None
    try:
        folder = run_dir(settings, claimed.job_id) / f"attempt{claimed.attempt}-launch{launch.rsplit('-', 1)[-1]}"
        folder.mkdir(parents=True, exist_ok=True)
        env = rank_env(settings, claimed, device.type, rank, int(order["world"]),
                       (order["store_host"], int(order["store_port"])), launch, torch.get_num_threads(), folder)
        proc = spawn_rank(env, folder / f"rank{rank}.log")
        (folder / f"rank{rank}.pid").write_text(str(proc.pid))     # for an operator (and the chaos test)
        log.info("%s: rank process %d on %s", tag, proc.pid, rank_slots.this_host(settings))
        term_sent = False
        while (code := proc.poll()) is None:
            if gone.is_set() or store.check([abort_key(launch)]):
                log.info("%s: aborted by its supervisor (or its store is gone); killing the rank", tag)
                proc.kill()
                proc.wait()
                return "aborted"
            if SHUTDOWN.is_set() and not term_sent:   # this worker stops: the rank stops every rank at its step
                proc.send_signal(signal.SIGTERM)
                term_sent = True
            time.sleep(POLL_S)
        return _report(store, launch, rank, str(code))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        rank_slots.release(settings, claimed.job_id, claimed.attempt, slots=slots)
