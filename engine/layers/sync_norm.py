"""Synchronized batchnorm: the statistics of the global batch, spread over data-parallel ranks.

Each rank holds a shard of the batch. Forward all-reduces per-channel sums so every rank
normalizes with the global batch's mean and biased variance (two passes, as the single-process
definition: the mean first, then the squared deviations from it):

    m = sum_r m_r         mean = sum_r sum(x_r) / m         var = sum_r sum((x_r - mean)^2) / m

Backward: the closed form of norm.py over the global batch,
    dx = k * (dy - sum(dy) / m - xhat * sum(dy * xhat) / m),   k = gamma / std,
with the sums taken over every rank. Each rank trains on its own loss L_r (the mean over its
shard); the global loss is L = sum_r share_r * L_r (share_r = m_r / m of the rows), so dL/dy on
rank r is share_r * dy_r: the all-reduced sums are weighted by share, and dx is returned in
rank r's own units (divided by share_r) because the gradient all-reduce weights every parameter
gradient upstream by share_r again. dgamma, dbeta stay this rank's (the gradient all-reduce sums
them with the same weights). With equal shards this is torch's SyncBatchNorm.

`sync` is the data-parallel side (engine.train.distributed.DataParallel): `sync.all_reduce(t)`
sums t over the ranks in place and returns it, `sync.share` is this rank's share of the batch.
"""
from __future__ import annotations

import torch
from torch import Tensor


def batchnorm_sync_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                           dims: tuple[int, ...], bc: tuple[int, ...], sync) -> tuple[Tensor, ...]:
    """(y, xhat, mean, var, inv_std, m) of this rank's shard x (N_r, C) or (N_r, C, H, W), normalized
    with the global batch's statistics; m is the number of values per channel over all ranks."""
    c = x.shape[1]
    sums = torch.cat([x.sum(dims), x.new_tensor([x.numel() // c])])     # (C + 1,) sum(x_r), m_r
    sync.all_reduce(sums)
    m = int(round(float(sums[c])))
    mean = sums[:c].div_(m)                                              # (C,)
    xhat = x - mean.view(bc)                                             # (N_r, C, ...) x - mean
    var = sync.all_reduce(torch.mul(xhat, xhat).sum(dims)).div_(m)       # (C,) biased
    inv_std = torch.rsqrt(var + eps)                                     # (C,)
    xhat.mul_(inv_std.view(bc))
    y = xhat.clone() if weight is None else torch.mul(xhat, weight.view(bc)).add_(bias.view(bc))
    return y, xhat, mean, var, inv_std, m


def batchnorm_sync_backward(dy: Tensor, xhat: Tensor, inv_std: Tensor, weight: Tensor | None,
                            dims: tuple[int, ...], bc: tuple[int, ...], m: int, sync) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dgamma, dbeta) of batchnorm_sync_forward on this rank; dgamma, dbeta this rank's (C,)."""
    c = dy.shape[1]
    dbeta = dy.sum(dims)                                                 # (C,) this rank's
    dgamma = torch.mul(dy, xhat).sum(dims)                               # (C,)
    sums = sync.all_reduce(torch.cat([dbeta, dgamma]).mul_(sync.share))  # (2C,) the global loss's sums
    k = inv_std if weight is None else inv_std * weight                  # (C,) gamma / std
    scale = k / (m * sync.share)                                         # (C,) back in this rank's units
    p, q = -scale * sums[c:], -scale * sums[:c]                          # (C,)
    dx = torch.mul(xhat, p.view(bc)).add_(q.view(bc)).addcmul_(dy, k.view(bc))
    return dx, dgamma, dbeta
