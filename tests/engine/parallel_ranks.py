"""Rank processes for the data-parallel proofs: spawned (never forked) by `spawn_ranks`, each joins a
gloo group on loopback, runs a check and raises on a mismatch; rank 0 writes what it measured."""
from __future__ import annotations

import json
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine import Model, fit, losses, optim
from engine.train import TrainStep
from engine.train.distributed import DataParallel

DT = torch.float64
MLP = ({"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"},
                   {"type": "linear", "out_features": 8}, {"type": "tanh"},
                   {"type": "linear", "out_features": 3}]}, (6,))
# no bias before a batchnorm: its true gradient is 0, and Adam would turn rounding noise there into
# steps of size lr (as in any network that keeps it; the comparison would then measure the noise)
CNN_BN = ({"layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
                      {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
                      {"type": "flatten"}, {"type": "linear", "out_features": 6, "bias": False},
                      {"type": "batchnorm"}, {"type": "relu"}, {"type": "linear", "out_features": 3}]}, (2, 6, 6))
SGD = {"type": "sgd", "lr": 0.1, "momentum": 0.9}
ADAMW = {"type": "adamw", "lr": 0.01}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(fn, world: int, *args) -> None:
    """fn(rank, world, port, *args) in `world` spawned processes; raises if any rank raised."""
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


def join(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))


def leave() -> None:
    """Tear the group down once every rank is done with it (no rank closes it under a peer's feet)."""
    dist.barrier()
    dist.destroy_process_group()


def batch(step: int, n: int, in_shape) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, *in_shape, generator=gen, dtype=DT), torch.randint(0, 3, (n,), generator=gen)


def steps_equal(rank: int, world: int, port: int, cases: list, out: str) -> None:
    """torch's _test_DDP_niter: a single-process model on the global batch and the data-parallel one on
    this rank's shard, stepped alike; every parameter (and buffer) compared after every step."""
    join(rank, world, port)
    found = {}
    for name, net, opt, kw in cases:
        spec, in_shape = {"mlp": MLP, "cnn_bn": CNN_BN}[net]
        one, ranked = (Model.from_spec(spec, in_shape, seed=3, dtype=DT) for _ in range(2))
        loss = losses.make("cross_entropy")
        clip = kw.pop("grad_clip_norm", None)
        n = kw.pop("batch", 12)
        reference = TrainStep(one, loss, optim.make(opt, one.parameters()), clip)
        parallel = DataParallel(**kw)
        parallel.attach(ranked, seed=3)
        step = parallel.step(ranked, loss, optim.make(opt, ranked.parameters()), clip)
        worst = 0.0
        for i in range(10):
            xb, yb = batch(i, n, in_shape)
            reference(xb, yb)
            step(*parallel.shard(xb, yb))
            worst = max(worst, float((one.flat_params - ranked.flat_params).abs().max()),
                        abs(reference.value - step.value))
            if kw.get("sync_batchnorm"):
                for key, buffer in one.buffers().items():
                    worst = max(worst, float((buffer.to(DT) - ranked.buffers()[key].to(DT)).abs().max()))
        found[name] = worst
        assert worst <= 1e-12, f"{name}: rank {rank} differs from one process by {worst:.3g}"
    if rank == 0:
        with open(out, "w") as f:
            json.dump(found, f)
    leave()


def fit_equal(rank: int, world: int, port: int, out: str) -> None:
    """fit with `parallel` equals fit in one process: weights, buffers and the curves."""
    join(rank, world, port)
    spec, in_shape = CNN_BN
    gen = torch.Generator().manual_seed(5)
    X, y = torch.randn(40, *in_shape, generator=gen, dtype=DT), torch.randint(0, 3, (40,), generator=gen)
    config = {"epochs": 3, "batch_size": 8, "validation_split": 0.2, "seed": 7}
    results = []
    for parallel in (None, DataParallel(sync_batchnorm=True, bucket_bytes=256)):
        model = Model.from_spec(spec, in_shape, seed=3, dtype=DT)
        result = fit(model, losses.make("cross_entropy"), optim.make(SGD, model.parameters()), X, y, config,
                     task="classification", parallel=parallel)
        results.append((model.state_dict(), result.history))
    (one, curve_one), (ranked, curve_ranked) = results
    worst = max(float((one[k].to(DT) - ranked[k].to(DT)).abs().max()) for k in one)
    curves = max(abs(a[m] - b[m]) for a, b in zip(curve_one, curve_ranked)
                 for m in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"))
    assert worst <= 1e-12 and curves <= 1e-12, (worst, curves)
    assert curve_ranked[-1]["world_size"] == world and len(curve_ranked[-1]["rank_step_time_s"]) == world
    dropout_streams(rank, world)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"weights": worst, "curves": curves}, f)
    leave()


def dropout_streams(rank: int, world: int) -> None:
    """Each rank draws its own dropout masks, from a stream fixed by (seed, rank, epoch): a resumed run
    draws at an epoch what the uninterrupted one did."""
    model = Model.from_spec({"layers": [{"type": "dropout", "p": 0.5}]}, (64,), seed=3, dtype=DT)
    parallel = DataParallel()
    parallel.attach(model, seed=3)
    masks = []
    for _ in range(2):
        parallel.begin_epoch(4)
        masks.append(model.forward(torch.ones(2, 64, dtype=DT), True))
    assert torch.equal(masks[0], masks[1])
    everyone = [torch.empty_like(masks[0]) for _ in range(world)]
    dist.all_gather(everyone, masks[0])
    assert all(not torch.equal(everyone[0], other) for other in everyone[1:])
