"""The events a webhook may subscribe to, and the `data` of each one's body."""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class WebhookEvent(StrEnum):
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    SWEEP_FINISHED = "sweep.finished"       # a sweep ended: succeeded, failed or cancelled
    FINDING_ERROR = "finding.error"         # a diagnostics finding of severity error on a running job


EVENTS = tuple(e.value for e in WebhookEvent)
# a job's final status -> its event
JOB_EVENTS = {"succeeded": WebhookEvent.JOB_SUCCEEDED, "failed": WebhookEvent.JOB_FAILED,
              "cancelled": WebhookEvent.JOB_CANCELLED}


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def job_data(row: Any) -> dict[str, Any]:
    """A job that reached a final status (a jobs row, ORM or Core)."""
    return {"job": {"id": row.id, "name": row.name, "status": row.status, "sweep_id": row.sweep_id,
                    "error_code": row.error_code, "error_message": row.error_message,
                    "finished_at": _iso(row.finished_at), "url": f"/v1/jobs/{row.id}"}}


def sweep_data(row: Any) -> dict[str, Any]:
    return {"sweep": {"id": row.id, "name": row.name, "status": row.status, "error_code": row.error_code,
                      "error_message": row.error_message, "finished_at": _iso(row.finished_at),
                      "url": f"/v1/sweeps/{row.id}"}}


def finding_data(job_id: str, finding: dict[str, Any]) -> dict[str, Any]:
    """A finding in the engine's JSON form (engine/diagnostics/findings.py)."""
    return {"job": {"id": job_id, "url": f"/v1/jobs/{job_id}"}, "finding": finding}
