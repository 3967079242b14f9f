"""GET /v1/me: the key a request acts for, what it uses, and the limits it works within."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from core import quota
from core.db import get_sessionmaker
from core.lifecycle import ACTIVE
from core.settings import Settings
from core.tables import ApiKey, Job

from ..deps import CurrentKey, Principal, SettingsDep
from ..errors import EVERY_OPERATION, error_responses
from ..schemas import UtcDatetime
from ..strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1", tags=["keys"],
                   responses=error_responses(*EVERY_OPERATION))


class Usage(BaseModel):
    storage_bytes: int = Field(description="Stored datasets and weights of this key.")
    max_storage_bytes: int
    active_jobs: int = Field(description="Queued or running.")
    max_concurrent_jobs: int


class Me(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, as `chainrule keys list` shows them.")
    created_at: UtcDatetime
    usage: Usage
    rate_limit_per_key: str = Field(description="`limits` notation; empty: none.")


def _me(settings: Settings, owner: Principal) -> Me:
    with get_sessionmaker(settings.database_url)() as s:
        created = s.scalar(select(ApiKey.created_at).where(ApiKey.id == owner.id))
        active = s.scalar(select(func.count()).select_from(Job).where(Job.owner_id == owner.id,
                                                                      Job.status.in_(ACTIVE)))
        used = quota.storage_used(s, owner.id)
    return Me(id=owner.id, name=owner.name, prefix=owner.prefix,
              created_at=created,
              usage=Usage(storage_bytes=used, max_storage_bytes=settings.max_storage_bytes_per_key,
                          active_jobs=active, max_concurrent_jobs=settings.max_concurrent_jobs),
              rate_limit_per_key=settings.rate_limit_per_key)


@router.get("/me", response_model=Me, summary="The API key making the request, its usage and limits")
async def get_me(owner: CurrentKey, settings: SettingsDep) -> Me:
    return await run_in_threadpool(_me, settings, owner)
