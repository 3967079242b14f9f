"""Which torch device this worker trains on, and how it is named in the job row."""
from __future__ import annotations

import os

import torch

from .options import DEVICE_CHOICES, DEVICE_ENV


class DeviceUnavailable(RuntimeError):
    pass


def resolve(choice: str | None = None) -> torch.device:
    """auto -> cuda when a GPU is visible, else cpu; cuda without a GPU is an error."""
    choice = (choice or os.environ.get(DEVICE_ENV) or "auto").lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"worker device must be one of {DEVICE_CHOICES}, got {choice!r}")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "--device cuda, but torch sees no CUDA device (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). "
            "Check the driver and the container's GPU reservation, or start the worker with --device cpu.")
    return torch.device(choice)


def describe(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)': what the job row shows as worker_device."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"[:100]


def for_job(requested: str, worker_device: torch.device) -> torch.device | None:
    """The device a job runs on here: `cpu` jobs on the cpu (a GPU worker can take them),
    `auto` jobs on the worker's device, `cuda` jobs only on a GPU worker (None: not here)."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and worker_device.type != "cuda":
        return None
    return worker_device
