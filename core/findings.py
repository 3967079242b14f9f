"""A job's findings (engine.diagnostics) in the database: rows in job_findings, and the summary kept on
the job row (counts by severity and the latest finding), so the status poll stays one SELECT.

The JSON form of a stored finding is the engine's (engine/diagnostics/findings.py) with its row id,
which increases in the order findings were written: what GET /v1/jobs/{id}/findings lists and what
the events stream sends as `finding` events (its cursor is the last id sent).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from engine.diagnostics import SEVERITIES

from .tables import Job, JobFinding
from .webhooks import outbox


def to_row(job_id: str, finding: dict[str, Any]) -> JobFinding:
    layer = finding.get("layer") or {}
    return JobFinding(job_id=job_id, epoch=int(finding["epoch"]), step=int(finding["step"]), code=finding["code"],
                      severity=finding["severity"], layer_key=layer.get("key"), layer_type=layer.get("type"),
                      value=finding.get("value"), threshold=finding.get("threshold"),
                      message=finding["message"], hint=finding["hint"])


def public(row: Any) -> dict[str, Any]:
    """A job_findings row (ORM object or Core row) in its JSON form."""
    layer = None if row.layer_key is None else {"key": row.layer_key, "type": row.layer_type}
    return {"id": row.id, "code": row.code, "severity": row.severity, "epoch": row.epoch, "step": row.step,
            "layer": layer, "value": row.value, "threshold": row.threshold, "message": row.message,
            "hint": row.hint}


def summary(session: Session, job_id: str) -> dict[str, Any]:
    counts = dict(session.execute(select(JobFinding.severity, func.count()).where(JobFinding.job_id == job_id)
                                  .group_by(JobFinding.severity)).all())
    latest = session.scalars(select(JobFinding).where(JobFinding.job_id == job_id)
                             .order_by(JobFinding.id.desc()).limit(1)).first()
    return {"counts": {s: int(counts.get(s, 0)) for s in SEVERITIES},
            "latest": None if latest is None else public(latest)}


def record(session: Session, job_id: str, findings: list[dict[str, Any]], fence: tuple) -> bool:
    """Add findings and refresh the job's summary, in the session's transaction; `fence`: the WHERE of
    the job row's update (core.lifecycle.fenced). False (nothing written: rolled back) when it fails."""
    session.add_all([to_row(job_id, f) for f in findings])
    session.flush()
    won = session.execute(update(Job).where(*fence)
                          .values(findings_summary=summary(session, job_id))).rowcount
    if not won:
        session.rollback()
    else:
        outbox.error_findings(session, job_id, findings)
    return bool(won)


def forget(session: Session, job_id: str, after_epoch: int | None) -> None:
    """Findings of epochs after `after_epoch` (all of them for None: a run that starts over) go, as
    those epochs are trained again; the summary follows."""
    where = [JobFinding.job_id == job_id] + ([JobFinding.epoch > after_epoch] if after_epoch is not None else [])
    session.execute(delete(JobFinding).where(*where))
    session.execute(update(Job).where(Job.id == job_id).values(findings_summary=summary(session, job_id)))
