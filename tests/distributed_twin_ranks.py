"""Rank processes for tests/test_distributed_twin.py: the engine's data-parallel step beside torch's
DistributedDataParallel on the twin (chainrule.twin), the same shards, per-rank batchnorm."""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent / "engine"))   # the engine tests' rank helpers
from parallel_ranks import CNN_BN, DT, SGD, batch, join  # noqa: E402

from chainrule.twin import twin  # noqa: E402
from engine import Model, losses, optim  # noqa: E402
from engine.train.distributed import DataParallel  # noqa: E402


def equal_to_ddp(rank: int, world: int, port: int, out: str) -> None:
    join(rank, world, port)
    spec, in_shape = CNN_BN
    model = Model.from_spec(spec, in_shape, seed=3, dtype=DT)
    net = twin(spec, in_shape, dtype=DT)
    net.load_state_dict(model.state_dict(), strict=True)
    ddp = DistributedDataParallel(net)                        # per-rank batchnorm, rank 0's buffers broadcast
    torch_opt = torch.optim.SGD(net.parameters(), lr=SGD["lr"], momentum=SGD["momentum"])
    parallel = DataParallel()
    parallel.attach(model, seed=3)
    step = parallel.step(model, losses.make("cross_entropy"), optim.make(SGD, model.parameters()), None)
    worst = 0.0
    for i in range(10):
        xr, yr = parallel.shard(*batch(i, 12, in_shape))
        torch_opt.zero_grad()
        F.cross_entropy(ddp(xr), yr).backward()
        torch_opt.step()
        step(xr, yr)
        theirs = dict(net.named_parameters())
        worst = max([worst] + [float((p - theirs[k].detach()).abs().max()) for k, p in model.parameters().items()])
        if rank == 0:     # rank 0's running statistics are the model's (the others' differ, as in DDP)
            worst = max([worst] + [float((b.to(DT) - net.state_dict()[k].to(DT)).abs().max())
                                   for k, b in model.buffers().items()])
    assert worst <= 1e-10, f"rank {rank}: the engine differs from torch DDP by {worst:.3g}"
    if rank == 0:
        Path(out).write_text(json.dumps({"worst": worst}))
    # DDP's reducer holds the process group: it goes first, and no rank tears the group down while its
    # peer still uses it (a reducer destroyed after its group aborted a rank: "terminate called ...")
    del ddp
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
