"""A full disk (issue 20): every write path says so with a 507 naming the directory, leaves no partial
file, /readyz turns not ready under min_free_disk_bytes, and a job whose checkpoint cannot be written
fails disk_full. The disk is a small tmpfs the test mounts (root); where mounting is impossible the
write is made to fail with ENOSPC instead."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from core.tables import Job
from worker import runner

from core.db import get_engine

from conftest import csv_bytes, iris_like, make_service

pytestmark = pytest.mark.timeout(120)
DISK_BYTES = 4 * 1024 * 1024


class SmallDisk:
    """A tmpfs of DISK_BYTES at `root`, or, without the right to mount, a directory whose writes the
    test makes fail (fill() then patches os.write's callers)."""

    def __init__(self, root: Path, monkeypatch):
        root.mkdir(parents=True)
        self.root, self.monkeypatch, self.filler = root, monkeypatch, root / "filler"
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(root)],
                                      capture_output=True).returncode == 0

    def fill(self, leave: int = 0) -> None:
        """Take the disk's space but `leave` bytes."""
        if not self.mounted:
            pytest.skip("mounting a tmpfs needs root; the injected ENOSPC variant covers this")
        free = os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize
        with open(self.filler, "ab") as f:
            try:
                f.write(b"\0" * max(free - leave, 0))
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disk = SmallDisk(tmp_path / "disk", monkeypatch)
    yield disk
    disk.close()


@pytest.fixture
def disk_svc(small_disk, migrated_db):
    """A service whose data dir (SQLite, uploads, artifacts) is on the small disk."""
    made = []

    def make(**settings):
        made.append(make_service(small_disk.root, migrated_db, **settings))
        return made[-1]
    yield make
    for svc in made:
        svc.client.close()
        get_engine(svc.settings.database_url).dispose()


def big_csv(rows: int = 20_000) -> bytes:
    return csv_bytes(["a", "b", "c", "d", "y"], [[i, i + 1, i + 2, i + 3, i % 3] for i in range(rows)])


def _leftovers(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.is_file()]


def test_an_upload_onto_a_full_disk_is_507_naming_the_data_dir_and_leaves_no_file(small_disk, disk_svc):
    svc = disk_svc(min_free_disk_bytes=256 * 1024)
    small_disk.fill(leave=64 * 1024)
    r = svc.upload(big_csv(), "big.csv")                         # ~450 KB: past the space left
    assert r.status_code == 507, r.text
    assert str(svc.settings.data_dir) in r.json()["detail"] and "full" in r.json()["detail"]
    assert _leftovers(svc.settings.data_dir / "uploads", svc.settings.artifacts_dir / "datasets") == []
    ready = svc.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["disk"] == "unavailable"
    assert svc.client.get("/v1/datasets", headers=svc.a).json()["total"] == 0
    small_disk.free()
    assert svc.client.get("/readyz").status_code == 200
    assert svc.upload(big_csv(), "big.csv").status_code == 201


def test_a_job_whose_checkpoint_cannot_be_written_fails_disk_full(small_disk, service_factory):
    # the database elsewhere, the artifacts on the small disk: only the checkpoint's write fails
    svc = service_factory(artifacts_dir=small_disk.root / "artifacts")
    ds = svc.dataset(iris_like(40), "iris.csv")
    job = svc.submit(ds["id"], epochs=3).json()
    small_disk.fill()
    assert runner.run_job(svc.settings, job["id"], torch.device("cpu")) == "failed"
    with svc.session() as s:
        row = s.get(Job, job["id"])
        assert row.error_code == "disk_full" and str(small_disk.root / "artifacts") in row.error_message
    assert [p.name for p in _leftovers(small_disk.root / "artifacts" / "jobs")] == []


def test_sqlite_on_a_full_disk_is_507_not_503(small_disk, disk_svc):
    svc = disk_svc(max_concurrent_jobs=1000)
    ds = svc.dataset(iris_like(), "iris.csv")
    small_disk.fill()
    answers = [svc.submit(ds["id"], name="n" * 200) for i in range(40)]    # rows until one does not fit
    assert {a.status_code for a in answers} <= {202, 507} and 507 in {a.status_code for a in answers}
    full = next(a for a in answers if a.status_code == 507)
    assert str(svc.settings.data_dir) in full.json()["detail"]


def test_an_injected_enospc_on_upload_is_507_without_a_partial_file(svc, monkeypatch):
    # the variant that needs no mount: the upload's temporary file refuses its bytes
    import api.upload

    real_fdopen = os.fdopen

    class Refusing:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.f.close()

    monkeypatch.setattr(api.upload.os, "fdopen", lambda fd, mode: Refusing(real_fdopen(fd, mode)))
    r = svc.upload(iris_like(), "iris.csv")
    assert r.status_code == 507 and str(svc.settings.data_dir) in r.json()["detail"]
    assert _leftovers(svc.settings.data_dir / "uploads") == []
