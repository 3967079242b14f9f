"""A full disk, told apart from every other failure: a write that found no space (ENOSPC or a quota,
from a file write, safetensors, SQLite or PostgreSQL) and the free space left under the data dir.

The API answers it 507 naming the data directory; a worker fails the job `disk_full`; /readyz is
not ready while the free space is under min_free_disk_bytes.
"""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

from .settings import Settings

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how libraries that do not raise OSError say it: safetensors' Rust io::Error, and SQLite
NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
PG_DISK_FULL = "53100"      # SQLSTATE disk_full
CODE = "disk_full"


def is_disk_full(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from, says a write found no space."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
            return True
        orig = getattr(exc, "orig", None)          # a SQLAlchemy DBAPIError wraps the driver's error
        if getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL" or getattr(orig, "sqlstate", None) == PG_DISK_FULL:
            return True
        if any(text in str(exc) for text in NO_SPACE_TEXTS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def full_message(settings: Settings) -> str:
    where = f"the data directory {settings.data_dir}"
    if settings.artifacts_dir != settings.data_dir / "artifacts":
        where += f" or the artifacts directory {settings.artifacts_dir}"
    return (f"the disk holding {where} is full (no space left on device); free space there (or delete "
            "datasets and jobs), then retry")


def free_bytes(settings: Settings) -> int:
    """The least free space among the directories the service writes: the data dir and the artifacts."""
    dirs = {settings.data_dir, settings.artifacts_dir}
    return min(shutil.disk_usage(_existing(d)).free for d in dirs)


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
