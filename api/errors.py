"""Exception handlers: every error body is JSON `{"detail": ...}` that says what is wrong and where.

422s keep FastAPI's list format, `[{"type", "loc", "msg"}]`, whatever raised them:
request validation, a spec whose shapes do not fit (engine.SpecError), a bad dataset,
an incompatible loss. Other statuses carry a string.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.db import Busy, is_busy, is_unavailable
from core.disk import full_message, is_disk_full
from core.tables import ID_PATTERN
from engine import SpecError

from .schemas import ErrorBody

log = logging.getLogger("chainrule.api")
_MAX_INPUT_REPR = 200
# every error body stays under 8 KB, whatever the request held: a message is cut, a list of problems
# ends with one that counts the rest (a 17.8 MB NPZ once got a 2.09 MB answer)
MAX_ERROR_BYTES = 8 * 1024
_MAX_MESSAGE_CHARS = 2000
_MAX_LOC_CHARS = 100
_PROBLEMS_BUDGET = MAX_ERROR_BYTES - 1024    # room left for the closing count
RETRY_AFTER_S = 5    # what a 503 asks a client to wait


# what each error status means here; every operation documents those it can return (error_responses)
ERROR_STATUSES = {
    401: "Missing, malformed or unknown API key (header `Authorization: Bearer <key>`)",
    408: "The request body stalled (no part of it for body_timeout_s); the connection is closed",
    404: "No such resource for this key (another key's is exactly as absent)",
    409: "The resource is not in a state that allows this (see the message)",
    413: "A body, an upload or a storage quota past its limit",
    415: "Not the content type this operation takes",
    422: "Invalid input: `detail` lists each problem with its location",
    429: "Too many requests (see Retry-After), or too many queued and running jobs",
    503: "Busy (this process has all the work it can take) or a dependency (the database) is "
         "unavailable; retry after Retry-After",
    507: "The disk holding the data directory is full; retry once space is freed",
}
# auth, body size, validation, rate limits, the database (busy or down), a full disk (SQLite writes
# its WAL on reads too)
EVERY_OPERATION = (401, 413, 422, 429, 503, 507)


_ID = "3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10"
# a real body of each status, as the service sends it: Swagger UI shows it under the status
ERROR_EXAMPLES: dict[int, Any] = {
    401: "missing API key: send the header 'Authorization: Bearer <key>'",
    404: f"job '{_ID}' not found",
    408: "the request body stalled: no part of it arrived for 30 s",
    409: f"job '{_ID}' is running; cancel it (POST /v1/jobs/{_ID}/cancel) and delete it once it has stopped",
    413: "the request body is 20000000 bytes; the limit is 16777216",
    415: "expected a multipart/form-data body with the dataset in a 'file' part (curl -F file=@data.csv)",
    422: [{"type": "greater_than_equal", "loc": ["body", "epochs"],
           "msg": "epochs: Input should be greater than or equal to 1 (got 0)", "input": 0}],
    429: "rate limit exceeded (100 per 1 second per key); retry in 1 s",
    503: "the service is busy (every database connection is in use); retry in 1 s",
    507: "the disk holding the data directory /data is full (no space left on device); free space there (or "
         "delete datasets and jobs), then retry",
}


def error_responses(*statuses: int, **descriptions: Any) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of error statuses, each with the ErrorBody schema and a real body of that
    status as its example; `descriptions` (keyed "s404" etc.) say what a status means for one operation,
    `examples` (keyed "e404") give its body there."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = descriptions.get(f"s{status}", ERROR_STATUSES[status])
        example = descriptions.get(f"e{status}", ERROR_EXAMPLES[status])
        if status == 404:     # the thing this operation's 404 is about
            thing = next((t for t in ("dataset", "sweep", "webhook") if t in description.lower()), "job")
            example = f"{thing} '{_ID}' not found"
        out[status] = {"model": ErrorBody, "description": description,
                       "content": {"application/json": {"example": {"detail": example}}}}
    return out


def problem(status: int, loc: list[Any], msg: str, type_: str = "value_error") -> HTTPException:
    """An error found by our own checks: a 422 in FastAPI's list shape, any other status a string."""
    if status == 422:
        return HTTPException(422, [{"type": type_, "loc": loc, "msg": msg}])
    return HTTPException(status, msg)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def bounded(detail: Any) -> Any:
    """`detail` within MAX_ERROR_BYTES: a string cut, a list of problems cut to what fits, then a count."""
    if isinstance(detail, str):
        return _cut(detail, _MAX_MESSAGE_CHARS)
    if not isinstance(detail, list):
        return detail
    out, size = [], 0
    for i, item in enumerate(detail):
        if isinstance(item, dict):
            item = {**item, "msg": _cut(str(item.get("msg", "")), _MAX_MESSAGE_CHARS // 2),
                    "loc": [_cut(p, _MAX_LOC_CHARS) if isinstance(p, str) else p for p in item.get("loc", [])]}
        size += len(orjson.dumps(item, default=str))
        if size > _PROBLEMS_BUDGET:
            out.append({"type": "too_many_errors", "loc": [],
                        "msg": f"{len(detail) - i} more problems not listed; fix those above and send it again"})
            break
        out.append(item)
    return out


def _readable(err: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error: drop the echoed input when large and unprintable ctx; clean the message."""
    msg = str(err.get("msg", ""))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    ctx = err.get("ctx") or {}
    if err.get("type") == "json_invalid":
        loc = err.get("loc", [])
        pos = loc[-1] if loc and isinstance(loc[-1], int) else None
        msg = f"invalid JSON{f' at character {pos}' if pos is not None else ''}: {ctx.get('error', msg)}"
    loc = list(err.get("loc", []))
    if err.get("type") == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        msg = "not an id: ids are UUIDs such as 3f1c2a9e-8d0b-4b8e-9c55-2f8e2a1b7c10"
        if loc and loc[-1] == "dataset_id":
            msg += "; upload a dataset with POST /v1/datasets and paste the id of its response"
    value = err.get("input")
    small_input = "input" in err and isinstance(value, (int, float, str, bool)) and \
        len(str(value)) <= _MAX_INPUT_REPR and not (isinstance(value, float) and not math.isfinite(value))
    where = _path(loc)
    if where and err.get("type") != "json_invalid":
        msg = f"{where}: {msg}" + (f" (got {err['input']!r})" if small_input else "")
    out: dict[str, Any] = {"type": err.get("type"), "loc": loc, "msg": msg}
    if small_input and not (isinstance(err["input"], float) and not math.isfinite(err["input"])):
        out["input"] = err["input"]   # NaN / Infinity are named in msg only: JSON has no such numbers
    return out


def _path(loc: list[Any]) -> str:
    """("body", "model", "layers", 0, "linear", "out_features") -> "model.layers[0].linear.out_features"."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or (f"{loc[0]}" if loc else "")


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": bounded([_readable(e) for e in exc.errors()])}, status_code=422)


async def spec_error(request: Request, exc: SpecError) -> JSONResponse:
    problem_ = {"type": "shape_mismatch", "loc": ["body", "model", "layers", exc.index], "msg": str(exc)}
    return JSONResponse({"detail": bounded([problem_])}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        allowed = allowed_methods(request) or [   # none: a mount (StaticFiles), which says its own
            m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()]
        detail = f"method {request.method} is not allowed on {request.url.path}; allowed: {', '.join(allowed)}"
        return JSONResponse({"detail": bounded(detail)}, status_code=405, headers={"Allow": ", ".join(allowed)})
    return JSONResponse({"detail": bounded(detail)}, status_code=exc.status_code, headers=exc.headers)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this path (Starlette's 405 names only the first route's):
    those for which a route matches in full."""
    routes = request.app.router.routes
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]


def unavailable_response() -> JSONResponse:
    return JSONResponse({"detail": "the database is unavailable; retry in a few seconds"},
                        status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def busy_response(retry_after_s: int, why: str) -> JSONResponse:
    """Load shed: the service is up and will answer soon; not an outage."""
    return JSONResponse({"detail": f"the service is busy ({why}); retry in {retry_after_s} s"},
                        status_code=503, headers={"Retry-After": str(retry_after_s)})


async def unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    """A 503 with Retry-After when the database is unreachable (a dependency down, not a bug) or no
    pooled connection came free in time (busy), else a 500. Also the handler of SQLAlchemy errors
    raised inside routes: an integrity error stays a 500."""
    if is_disk_full(exc):
        log.error("disk full on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__,
                  str(exc).splitlines()[0][:300] if str(exc) else "")
        return JSONResponse({"detail": full_message(request.app.state.settings)}, status_code=507)
    if is_busy(exc):
        return busy_response(request.app.state.settings.busy_retry_after_s, "every database connection is in use")
    if is_unavailable(exc):
        log.warning("database unavailable on %s %s: %s: %s", request.method, request.url.path,
                    type(exc).__name__, str(exc).splitlines()[0][:300])
        return unavailable_response()
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; this is a bug in chainrule, not in the request"},
                        status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(SpecError, spec_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SQLAlchemyError, unhandled_error)
    app.add_exception_handler(psycopg.Error, unhandled_error)   # the status poll's own pool (core.poll_reads)
    app.add_exception_handler(Busy, unhandled_error)
    app.add_exception_handler(OSError, unhandled_error)      # a full disk is a 507, any other OSError a 500
    app.add_exception_handler(Exception, unhandled_error)
