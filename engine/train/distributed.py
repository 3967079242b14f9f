"""Data parallelism on torch.distributed: one model per rank, each on its shard of the global batch.

    dist.init_process_group("gloo" | "nccl", ...)             # the caller's: a rendezvous per job
    parallel = DataParallel(bucket_bytes=25 * 2**20, sync_batchnorm=False)
    fit(model, loss, optimizer, X, y, config, task=..., parallel=parallel)

Every rank holds the whole dataset and draws the same global batches (the shuffle generator is
seeded alike); each trains on its rows of the batch (`shard`) and the step averages the gradients:

  - the flat gradient buffer is cut into buckets of `bucket_bytes` from its end, as the backward
    fills it (layers in reverse); a bucket's async all_reduce starts as soon as the backward has
    finished every layer whose parameters it holds, so communication overlaps the rest of the
    backward; all are complete before clipping and the optimizer. Each rank weights its gradients
    by its share of the batch's rows (1/world for equal shards), so the sum is the gradient of the
    global batch's mean loss, whatever the shard sizes.
  - parameters and buffers are broadcast from rank 0 when fit starts (fresh or resumed); buffers
    (batchnorm's running statistics, per rank while training, as torch DDP) again at each epoch's
    end, so every rank evaluates and checkpoints rank 0's model.
  - sync_batchnorm: batchnorm layers normalize with the global batch's statistics
    (engine/layers/sync_norm.py, our formula forward and backward).
  - dropout: each rank draws from its own stream, seeded from (seed, rank, epoch), so a resumed run
    draws what the uninterrupted one would have.
  - the loss of each step, the epoch's training metrics and the stop flags are reduced over the
    ranks; the epoch's metrics dict (validation, layer health) is rank 0's, broadcast (`agree`), so
    every rank takes the same decisions (early stopping, diagnosis stops). Gradient health is that
    of the averaged gradient, the same on every rank.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .rows import BatchPlan, batchnorm_needs_pairs
from .step import TrainStep

DEFAULT_BUCKET_BYTES = 25 * 2**20              # torch DDP's bucket_cap_mb
_DROPOUT_SEED_MIX = (0xD1B54A32D192ED03, 0x8CB92BA72F3D8DD7)


def bucket_plan(model, bucket_bytes: int) -> list[tuple[int, int, int]]:
    """(lo, hi, ready) of each bucket of model.flat_grads, from the buffer's end: elements [lo, hi)
    are final once the backward has finished layer `ready` (the lowest layer owning any of them)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be at least 1, got {bucket_bytes}")
    base, size = model.flat_grads.data_ptr(), model.flat_grads.element_size()
    owner: list[tuple[int, int, int]] = []      # (lo, hi, layer) of each layer's own gradients
    for i, (_, layer) in enumerate(model.layer_items()):
        for grad in layer.grads.values():
            lo = (grad.data_ptr() - base) // size
            owner.append((lo, lo + grad.numel(), i))
    per_bucket = max(1, bucket_bytes // size)
    buckets, hi = [], model.flat_grads.numel()
    while hi > 0:
        lo = max(0, hi - per_bucket)
        buckets.append((lo, hi, min(i for a, b, i in owner if a < hi and b > lo)))
        hi = lo
    return buckets


class DataParallel:
    """This rank's side of a data-parallel fit over `group` (the default process group if None)."""

    def __init__(self, group=None, *, bucket_bytes: int = DEFAULT_BUCKET_BYTES, sync_batchnorm: bool = False,
                 overlap: bool = True):
        if not dist.is_initialized():
            raise RuntimeError("DataParallel needs torch.distributed.init_process_group to have run")
        self.group, self.bucket_bytes, self.sync_batchnorm, self.overlap = group, bucket_bytes, sync_batchnorm, overlap
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        self.source = 0 if group is None else dist.get_global_rank(group, 0)
        self.share = 1.0 / self.world             # this rank's share of the current batch's rows
        self.seed = 0
        self.step_seconds, self.steps = 0.0, 0    # this rank's time in steps since the epoch began
        self.model = None
        self.buckets: dict[int, list[Tensor]] = {}

    # -- set up ------------------------------------------------------------------------
    def attach(self, model, seed: int) -> None:
        """Bucket the gradients, synchronize batchnorm if asked, and take rank 0's parameters and buffers."""
        self.model, self.seed = model, seed
        self.buckets = {}
        for lo, hi, ready in bucket_plan(model, self.bucket_bytes):
            self.buckets.setdefault(ready, []).append(model.flat_grads[lo:hi])
        for _, layer in model.layer_items():
            if layer.kind == "batchnorm":
                layer.sync = self if self.sync_batchnorm else None
        dist.broadcast(model.flat_params, self.source, group=self.group)
        self.sync_buffers()

    def plan(self, batches: BatchPlan) -> BatchPlan:
        """The batches with a last one too small to give every rank rows joined to the one before."""
        least = 2 if batchnorm_needs_pairs(self.model) and not self.sync_batchnorm else 1
        bounds = list(batches.bounds)
        if (bounds[0][1] - bounds[0][0]) < least * self.world:
            raise ValueError(f"a batch of {bounds[0][1] - bounds[0][0]} rows cannot give each of {self.world} "
                             f"processes {least} row(s); raise batch_size to at least {least * self.world}")
        while len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < least * self.world:
            bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
        return replace(batches, bounds=bounds, health_batch=min(batches.health_batch, len(bounds) - 1))

    # -- each step ---------------------------------------------------------------------
    def all_reduce(self, t: Tensor) -> Tensor:
        """t summed over the ranks, in place (sync batchnorm's statistics)."""
        dist.all_reduce(t, group=self.group)
        return t

    def shard(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's rows of a global batch (contiguous, sizes differing by at most one); sets `share`."""
        n = xb.shape[0]
        xr, yr = torch.tensor_split(xb, self.world)[self.rank], torch.tensor_split(yb, self.world)[self.rank]
        self.share = xr.shape[0] / n
        return xr, yr

    def step(self, model, loss, optimizer, grad_clip_norm: float | None) -> "DataParallelStep":
        return DataParallelStep(model, loss, optimizer, grad_clip_norm, parallel=self)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (a cancel seen by one rank stops all)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.model.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())

    # -- each epoch --------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        if self.world > 1:
            a, b = _DROPOUT_SEED_MIX
            self.model.generator.manual_seed((self.seed * a + (self.rank + 1) * b + epoch) % 2**63)
        self.step_seconds, self.steps = 0.0, 0

    def sync_buffers(self) -> None:
        for buffer in self.model.buffers().values():
            dist.broadcast(buffer, self.source, group=self.group)

    def reduce_meter(self, meter) -> None:
        """The epoch's training sums of every rank, in every rank's Meter (engine.train.metrics)."""
        device = self.model.device
        parts = [torch.tensor([meter.loss_sum, float(meter.n)], dtype=torch.float64, device=device)]
        if meter.kind == "regression":
            parts += [meter.abs_sum, meter.sq_sum]
        else:
            parts += [meter.correct.to(torch.float64).reshape(1),
                      torch.tensor([float(getattr(meter, "tokens", 0))], dtype=torch.float64, device=device)]
        sums = self.all_reduce(torch.cat(parts))
        meter.loss_sum, meter.n = float(sums[0]), int(round(float(sums[1])))
        if meter.kind == "regression":
            w = meter.abs_sum.numel()
            meter.abs_sum, meter.sq_sum = sums[2:2 + w].clone(), sums[2 + w:].clone()
        else:
            meter.correct = sums[2].round().to(torch.int64)
            meter.tokens = int(round(float(sums[3])))

    def agree(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Rank 0's epoch metrics on every rank (their numbers broadcast), with each rank's mean step
        time: metrics["world_size"], metrics["rank_step_time_s"] (one per rank)."""
        leaves: list[float] = []
        _numbers(metrics, leaves)
        f64 = dict(dtype=torch.float64, device=self.model.device)   # NCCL moves only device tensors
        count = torch.tensor([float(len(leaves))], **f64)
        dist.broadcast(count, self.source, group=self.group)
        values = torch.tensor(leaves if int(count) == len(leaves) else [0.0] * int(count), **f64)
        dist.broadcast(values, self.source, group=self.group)
        if int(count) != len(leaves):
            raise RuntimeError(f"rank {self.rank}'s epoch metrics hold {len(leaves)} numbers, rank 0's "
                               f"{int(count)}: the ranks do not train the same model")
        agreed = _filled(metrics, iter(values.tolist()))
        times = torch.zeros(self.world, **f64)
        times[self.rank] = self.step_seconds / max(self.steps, 1)
        dist.all_reduce(times, group=self.group)
        agreed["world_size"], agreed["rank_step_time_s"] = self.world, times.tolist()
        return agreed


def _numbers(obj: Any, out: list[float]) -> None:
    """The numbers of a metrics tree (dicts, lists), depth first in order."""
    if isinstance(obj, dict):
        for v in obj.values():
            _numbers(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _numbers(v, out)
    elif isinstance(obj, (bool, int, float)):
        out.append(float(obj))


def _filled(obj: Any, values) -> Any:
    """obj with its numbers replaced, in _numbers' order, by `values` (types kept)."""
    if isinstance(obj, dict):
        return {k: _filled(v, values) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_filled(v, values) for v in obj)
    if isinstance(obj, bool):
        return bool(next(values))
    if isinstance(obj, int):
        return int(round(next(values)))
    if isinstance(obj, float):
        return next(values)
    return obj


class DataParallelStep(TrainStep):
    """TrainStep on this rank's shard: the loss and the gradients averaged over the ranks."""

    def __init__(self, model, loss, optimizer, grad_clip_norm: float | None = None, *, parallel: DataParallel):
        super().__init__(model, loss, optimizer, grad_clip_norm)
        self.parallel = parallel
        self._works: list = []

    def forward_backward(self, xb: Tensor, yb: Tensor, observe=None) -> Tensor:
        started = time.perf_counter()
        try:
            return super().forward_backward(xb, yb, observe)
        finally:
            self.parallel.step_seconds += time.perf_counter() - started

    def apply(self) -> None:
        started = time.perf_counter()
        super().apply()
        self.parallel.step_seconds += time.perf_counter() - started
        self.parallel.steps += 1

    def __call__(self, xb: Tensor, yb: Tensor) -> Tensor:
        started = time.perf_counter()
        loss = super().__call__(xb, yb)
        self.parallel.step_seconds += time.perf_counter() - started
        self.parallel.steps += 1
        return loss

    def _launch(self, layer_index: int) -> None:
        dp = self.parallel
        for bucket in dp.buckets.get(layer_index, ()):
            bucket.mul_(dp.share)
            self._works.append(dist.all_reduce(bucket, group=dp.group, async_op=True))

    def _backward(self, loss: Tensor) -> float:
        dp = self.parallel
        value = loss.detach().to(torch.float64).reshape(1).mul_(dp.share)   # the global batch's mean loss
        self._works = [dist.all_reduce(value, group=dp.group, async_op=True)]
        self.model.backward(self.loss.backward(), need_input_grad=False,
                            after_layer=self._launch if dp.overlap else None)
        if not dp.overlap:                        # the reference the overlap is measured against
            for index in sorted(dp.buckets, reverse=True):
                self._launch(index)
        for work in self._works:
            work.wait()
        self._works = []
        return value.item()
