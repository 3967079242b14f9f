"""POST /v1/gradcheck: "backprop is just the chain rule", verified on the user's own network (api/gradcheck.py)."""
from __future__ import annotations

import threading

from fastapi import APIRouter, Request

from core.jsonsafe import json_safe
from core.tables import Dataset

from .. import gradcheck
from core.admission import Rejection
from ..analysis_schemas import GradcheckReport, GradcheckRequest
from ..deps import CurrentKey, SessionDep, SettingsDep
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1", tags=["analyses"],
                   responses=error_responses(*EVERY_OPERATION))


class GradcheckSlots:
    """Gradient checks running at once in this API process (each holds a core for up to seconds)."""

    def __init__(self, limit: int):
        self._free = threading.BoundedSemaphore(limit)

    def take(self) -> bool:
        return self._free.acquire(blocking=False)

    def give(self) -> None:
        self._free.release()


@router.post("/gradcheck", response_model=GradcheckReport,
             responses=error_responses(404, s404="No such dataset for this key",
                                       s429="Too many requests (Retry-After), or gradcheck_concurrency checks "
                                            "already running in this API process"),
             summary="Check the engine's backward on your network against finite differences")
def check_gradients(req: GradcheckRequest, request: Request, session: SessionDep, owner: CurrentKey,
                    settings: SettingsDep) -> GradcheckReport:
    """Every layer's hand-written backward, chained by the model, against centred finite differences of
    the loss in float64, on a small batch; synchronous, bounded by the gradcheck_* limits. A layer
    passes within `tolerance`; one whose only misses sit on a kink (relu at 0, max pool ties) is
    reported as `kink`, not failed."""
    dataset = None
    if req.dataset_id is not None:
        dataset = session.get(Dataset, req.dataset_id)
        if dataset is None or dataset.owner_id != owner.id:
            raise problem(404, ["body", "dataset_id"], f"dataset {req.dataset_id!r} not found: upload one with "
                          "POST /v1/datasets (GET /v1/datasets lists yours)")
    shape = tuple(int(d) for d in (dataset.input_shape if dataset is not None else req.input_shape))
    slots: GradcheckSlots = request.app.state.gradcheck_slots
    if not slots.take():
        raise problem(429, ["body"], f"{settings.gradcheck_concurrency} gradient checks are already running "
                      "here (gradcheck_concurrency); retry in a few seconds")
    try:
        report = gradcheck.run(req, shape, dataset, settings)
    except Rejection as e:
        raise problem(e.status, e.loc, e.message, e.type)
    finally:
        slots.give()
    return GradcheckReport.model_validate(json_safe(report))
