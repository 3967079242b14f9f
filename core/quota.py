"""Per-key storage: the stored tensor files of a key's datasets and the weights of its jobs, against
max_storage_bytes_per_key. Checked under the key's lock (core.lifecycle.lock_owner) by whatever adds
to it: an upload before its file is written, a submit before its job can produce weights."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .settings import Settings
from .tables import Dataset, Job


class StorageFull(Exception):
    def __init__(self, used: int, adding: int, quota: int):
        what = f"storing {adding:,} more bytes would take this key to {used + adding:,}" if adding else \
            f"this key already stores {used:,} bytes"
        super().__init__(f"{what}; its storage quota is {quota:,} bytes (max_storage_bytes_per_key): delete "
                         "datasets or finished jobs (DELETE /v1/datasets/{id}, DELETE /v1/jobs/{id}) to make room")
        self.used, self.adding, self.quota = used, adding, quota


def storage_used(session: Session, owner_id: str) -> int:
    stored = func.coalesce(Dataset.stored_bytes, Dataset.size_bytes)   # rows from before stored_bytes
    datasets = session.scalar(select(func.coalesce(func.sum(stored), 0)).where(Dataset.owner_id == owner_id))
    weights = session.scalar(select(func.coalesce(func.sum(Job.artifact_bytes), 0)).where(Job.owner_id == owner_id))
    return int(datasets) + int(weights)


def check(session: Session, settings: Settings, owner_id: str, adding: int = 0) -> None:
    """Raise StorageFull unless `adding` more bytes fit (adding 0: unless the key is under its quota)."""
    used, quota = storage_used(session, owner_id), settings.max_storage_bytes_per_key
    if used + adding > quota or (adding == 0 and used >= quota):
        raise StorageFull(used, adding, quota)
