"""The FastAPI application. Serve with `uvicorn --factory api.main:create_app` (or `chainrule serve`).

No schema work at startup: the schema comes from migrations (`core.db.upgrade`),
run by the CLI or the compose migration step before the API starts.
Built by chainrule (the composition root); imports core/ and engine/, never worker/.
"""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from core.db import PoolLimits, set_pool_limits
from core.poll_reads import PollReads
from core.settings import Settings, get_settings

from . import docs, errors, openapi_extras, ui
from .deps import KeyCache
from .gate import Gate
from .malloc import return_large_buffers
from .predict import ModelCache
from .body_timeout import BodyTimeout
from .ratelimit import RateLimits
from .shedding import InFlightLimit
from .routes import (attention, datasets, events, generate, gradcheck, health, jobs, landscape, me, plots, results,
                     split, sweeps, webhooks)
from .routes.events import StreamSlots
from .shared_streams import SharedStreamSlots
from .routes.export import router as export_router
from .routes.gradcheck import GradcheckSlots

VERSION = "0.1.0"
DESCRIPTION = """
Training as a service. Upload a dataset, describe a network as JSON, and a worker trains
it with chainrule's hand-written engine: every layer's backward pass, every loss and
optimizer written out on raw tensors.

**Flow**: `POST /v1/datasets` (multipart CSV or NPZ) → `POST /v1/jobs` → poll
`GET /v1/jobs/{id}` (or follow `GET /v1/jobs/{id}/events`, server-sent events) →
`GET /v1/jobs/{id}/metrics` → `GET /v1/jobs/{id}/weights`
(safetensors that load into `torch.nn.Sequential` with `strict=True`) or
`POST /v1/jobs/{id}/predict`. Pictures: `GET /v1/jobs/{id}/plots/loss.png` (and `metric`,
`grad_norms`, `update_ratios`, `landscape`); the dashboard at `/ui`.

**Auth**: `Authorization: Bearer <key>`; make a key with `chainrule keys create NAME`
and paste it into *Authorize*. Another key's datasets and jobs are 404.

**Errors**: every error is JSON `{"detail": ...}`; a 422's detail is a list of
`{"loc", "msg", "type"}` naming the field, layer, row or column at fault.
"""


def operation_id(route: APIRoute) -> str:
    """The handler's name (`submit_job`): what generated clients call the method."""
    return route.name


@asynccontextmanager
async def lifespan(app: FastAPI):
    """On PostgreSQL, the status poll's asyncio pool (core.poll_reads), on the server's loop."""
    settings: Settings = app.state.settings
    if settings.database_url.startswith("postgresql"):
        app.state.poll_reads = PollReads(settings.database_url, settings.db_pool_size, settings.db_pool_timeout_s)
        await app.state.poll_reads.open()
    try:
        yield
    finally:
        if app.state.poll_reads is not None:
            await app.state.poll_reads.close()
            app.state.poll_reads = None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return_large_buffers()
    app = FastAPI(lifespan=lifespan,
        title="chainrule", version=VERSION, description=DESCRIPTION,
        summary="Training as a service: a hand-written training engine behind a REST API.",
        openapi_tags=[{"name": "datasets", "description": "Upload and manage training data."},
                      {"name": "jobs", "description": "Submit, follow and use training jobs."},
                      {"name": "analyses", "description": "Check a network's backward; see a trained "
                                                          "network's loss landscape and curvature."},
                      {"name": "keys", "description": "The API key a request acts for."},
                      {"name": "sweeps", "description": "Hyperparameter searches: every trial is a job."},
                      {"name": "webhooks", "description": "Signed HTTP callbacks when jobs and sweeps end."},
                      {"name": "health", "description": "Probes for orchestrators."}],
        docs_url=None, redoc_url=None, generate_unique_id_function=operation_id,
    )
    set_pool_limits(settings.database_url, PoolLimits(settings.db_pool_size, settings.db_max_overflow,
                                                      settings.db_pool_timeout_s))
    app.add_middleware(Gate, settings=settings, rate_limits=RateLimits(settings))
    app.add_middleware(BodyTimeout, timeout_s=settings.body_timeout_s)
    app.add_middleware(InFlightLimit, max_in_flight=settings.max_requests_in_flight,   # outermost: first
                       retry_after_s=settings.busy_retry_after_s)
    app.state.settings = settings
    app.state.poll_reads = None
    app.state.key_cache = KeyCache()
    app.state.model_cache = ModelCache()
    app.state.event_slots = StreamSlots()
    app.state.shared_event_slots = SharedStreamSlots(settings.broker_url) \
        if settings.broker_url.startswith(("redis://", "rediss://")) else None
    app.state.gradcheck_slots = GradcheckSlots(settings.gradcheck_concurrency)
    errors.install(app)
    docs.install(app)
    openapi_extras.install(app, settings)
    ui.install(app)
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(results.router)
    app.include_router(export_router)
    app.include_router(split.router)
    app.include_router(generate.router)
    app.include_router(attention.router)
    app.include_router(events.router)
    app.include_router(me.router)
    app.include_router(sweeps.router)
    app.include_router(plots.router)
    app.include_router(gradcheck.router)
    app.include_router(landscape.router)
    app.include_router(webhooks.router)
    return app
