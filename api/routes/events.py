"""GET /v1/jobs/{id}/events: a job's progress, epochs and status as server-sent events (api/events.py
says what is sent). Streams are bounded per key; keep-alives and client disconnects are
sse-starlette's, which also ends open streams when the server shuts down."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Annotated, AsyncIterator, Awaitable, Callable

import anyio
import orjson
from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from core.settings import Settings

from .. import events
from ..deps import CurrentKey, JobId, SettingsDep
from ..errors import busy_response, error_responses, problem
from ..event_schemas import event_stream_content
from ..shared_streams import RENEW_S, SharedStreamSlots

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
RETRY_MS = 2000   # how soon a disconnected EventSource reconnects


class StreamSlots:
    """Open event streams per key, in this API process (api.shared_streams counts them across
    processes when the broker is Redis)."""

    def __init__(self):
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, key_id: str, limit: int) -> bool:
        with self._lock:
            if self._open[key_id] >= limit:
                return False
            self._open[key_id] += 1
            return True

    def total(self) -> int:
        """Streams open in this process, all keys together."""
        return sum(self._open.values())

    def release(self, key_id: str) -> None:
        with self._lock:
            self._open[key_id] -= 1
            if self._open[key_id] <= 0:
                del self._open[key_id]


class BoundedEventStream(EventSourceResponse):
    """Gives its slot back however the response ends: finished, disconnected, cancelled."""

    def __init__(self, content, release, **kwargs):
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()


async def job_events(settings: Settings, job_id: str, cursor: events.Cursor,
                     renew: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[ServerSentEvent]:
    """The stream; `renew` keeps its lease across processes (every RENEW_S)."""
    deadline = time.monotonic() + settings.events_stream_max_s
    retry: int | None = RETRY_MS
    renewed = time.monotonic()
    while True:
        if renew is not None and time.monotonic() - renewed > RENEW_S:
            await renew()
            renewed = time.monotonic()
        batch, over = await run_in_threadpool(events.poll, settings.database_url, job_id, cursor)
        for event, event_id in batch:
            yield ServerSentEvent(data=orjson.dumps(event.data).decode(), event=event.kind, id=event_id,
                                  retry=retry)
            retry = None
        if over or time.monotonic() > deadline:   # past the deadline the client resumes from its last id
            return
        await anyio.sleep(settings.events_poll_interval_s)


_EXAMPLE = ('id: status=running;epoch_row=7;progress=3/120\nevent: epoch\n'
            'data: {"epoch": 3, "train_loss": 0.41, "val_loss": 0.44, "val_accuracy": 0.87}\n\n')
_EVENTS_DOC = {
    200: {"description": "`text/event-stream` until the job's final status: events `status`, `epoch`, "
                         "`progress` and `finding`, each with an `id` to resume from; `itemSchema` gives each "
                         "event's data (the module docstring of api/events.py gives the format).",
          "content": event_stream_content(_EXAMPLE)},
    **error_responses(401, 404, 422, 429, 503, s404="No such job for this key",
                      s422="A malformed job id or Last-Event-ID header",
                      s429="This key already has max_event_streams_per_key streams open",
                      s503="This process already has max_event_streams streams open (all keys), or the "
                           "database is unavailable",
                      e429="this key already has 8 event streams open (max_event_streams_per_key); close one "
                           "first",
                      e503="the service is busy (512 event streams open, the most this process serves); "
                           "retry in 1 s"),
}


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=_EVENTS_DOC,
            summary="Follow a job: progress, epochs, findings and status as server-sent events")
async def stream_events(job_id: JobId, request: Request, owner: CurrentKey, settings: SettingsDep,
                        last_event_id: Annotated[str | None, Header(
                            alias="Last-Event-ID", max_length=500,
                            description="Resume after this event id: only what came after it is sent.")] = None):
    owner_id = await run_in_threadpool(events.owner_of, settings.database_url, job_id)
    if owner_id != owner.id:
        raise problem(404, ["path", "job_id"], f"job {job_id!r} not found")
    slots: StreamSlots = request.app.state.event_slots
    if slots.total() >= settings.max_event_streams:
        return busy_response(settings.busy_retry_after_s, f"{settings.max_event_streams} event streams open, the "
                             "most this process serves")
    too_many = problem(429, ["path", "job_id"], f"this key already has {settings.max_event_streams_per_key} "
                       "event streams open (max_event_streams_per_key); close one first")
    if not slots.acquire(owner.id, settings.max_event_streams_per_key):
        raise too_many
    shared: SharedStreamSlots | None = request.app.state.shared_event_slots
    lease = None if shared is None else await shared.acquire(owner.id, settings.max_event_streams_per_key)
    if shared is not None and lease is None:                 # the key's streams in other processes
        slots.release(owner.id)
        raise too_many

    async def release() -> None:
        slots.release(owner.id)
        if lease is not None:
            await shared.release(owner.id, lease)
    renew = None if lease is None else (lambda: shared.renew(owner.id, lease))
    return BoundedEventStream(job_events(settings, job_id, events.parse_cursor(last_event_id), renew),
                              release=release, ping=settings.events_keepalive_s,
                              headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
