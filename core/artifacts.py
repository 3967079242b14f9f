"""Where files live in the artifact store (a directory; a shared volume in compose).

Rows store paths relative to `artifacts_dir`, so the store can be mounted anywhere.
  datasets/{id}.safetensors        X (N, *input_shape) float32; y int64 class ids or float32 targets
  jobs/{id}/checkpoint.safetensors engine.checkpoint format, rewritten each epoch
  jobs/{id}/weights.safetensors    the trained state_dict, torch.nn names (loads with strict=True)
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .settings import Settings


def dataset_relpath(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.safetensors"


def job_dir_relpath(job_id: str) -> str:
    return f"jobs/{job_id}"


def checkpoint_relpath(job_id: str) -> str:
    return f"{job_dir_relpath(job_id)}/checkpoint.safetensors"


def weights_relpath(job_id: str) -> str:
    return f"{job_dir_relpath(job_id)}/weights.safetensors"


def remove_checkpoint(settings: Settings, job_id: str) -> None:
    """A job that has ended resumes no more: its checkpoint (often larger than its weights) goes."""
    resolve(settings, checkpoint_relpath(job_id)).unlink(missing_ok=True)


def resolve(settings: Settings, relpath: str) -> Path:
    path = (settings.artifacts_dir / relpath).resolve()
    if settings.artifacts_dir.resolve() not in path.parents:
        raise ValueError(f"artifact path {relpath!r} escapes the artifact store")
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
