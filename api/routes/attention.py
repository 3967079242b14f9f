"""Where a model's heads look: GET /v1/jobs/{id}/attention, each self_attention layer's weights per
head for one sequence (api.attention picks the weights and the sequence; engine.attention_maps
runs the forward)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from core.tables import Dataset, Job
from engine.attention_maps import attention_layers, attention_maps
from engine.diagnostics.stats import attention_entropy
from engine.text import Tokenizer

from ..attention import model_from_checkpoint, token_labels, validation_sample, weights_of
from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute
from .jobs import NOT_FOUND
from .results import succeeded_weights_path

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))
DEFAULT_LENGTH = 64


class LayerAttention(BaseModel):
    key: str = Field(description="The self_attention layer, e.g. blocks.0.attn.")
    heads: list[list[list[float]]] = Field(description="Per head, a T x T matrix: row i is query i's weights "
                                                       "over the keys (each row sums to 1; causal: 0 after i).")
    entropy: list[float] = Field(description="Per head, the mean over queries of -sum_j P_ij log P_ij (nats).")


class AttentionMaps(BaseModel):
    job_id: str
    source: str = Field(description="`weights`: the succeeded job's; `checkpoint`: the latest of a running job.")
    epoch: int | None = Field(description="The epoch those weights are from.")
    sample: str = Field(description="`validation`: the start of the job's validation data; `text`: yours.")
    tokens: list[str] = Field(description="The sequence, one entry per token, as text.")
    ids: list[int]
    layers: list[LayerAttention]


@router.get("/{job_id}/attention", response_model=AttentionMaps, responses=NOT_FOUND,
            summary="Attention maps: each head's weights on one sequence")
def get_attention(job_id: JobId, request: Request, session: SessionDep, owner: CurrentKey, settings: SettingsDep,
                  text: Annotated[str | None, Query(min_length=1, max_length=10_000, description=(
                      "A sequence of your own, in the job's tokenizer; absent: the start of the job's "
                      "validation data."))] = None,
                  length: Annotated[int | None, Query(ge=1, description=(
                      "Tokens shown, at most the job's context length (default: the context length, up to "
                      f"{DEFAULT_LENGTH})."))] = None) -> AttentionMaps:
    job = get_owned(session, owner, Job, job_id, "job")
    shape = tuple(int(d) for d in job.input_shape)
    context = shape[0] if len(shape) == 1 else 0
    length = min(DEFAULT_LENGTH, context) if length is None else length
    if length > context:
        raise problem(422, ["query", "length"], f"length {length} exceeds the job's context length of {context}")
    weights = weights_of(job, settings)
    if weights.state is None:
        loaded = request.app.state.model_cache.get(job.id, job.request, shape,
                                                    succeeded_weights_path(job, settings, "it has attention maps"))
        model, lock = loaded.model, loaded.lock
    else:
        model, lock = model_from_checkpoint(job, weights.state), None
    keys = attention_layers(model)
    if not keys:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} has no self_attention layer, so no attention maps")
    tokenizer = Tokenizer.from_dict(job.tokenizer) if job.tokenizer else None
    if text is not None:
        if tokenizer is None:
            raise problem(422, ["query", "text"], f"job {job.id!r} has no tokenizer (its dataset is token ids, "
                          "not text); leave text out to see a validation sample")
        try:
            ids = tokenizer.encode(text)[:length]
        except ValueError as e:
            raise problem(422, ["query", "text"], str(e))
    else:
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        ids = validation_sample(job, dataset, settings, length)
    cells = len(keys) * model.layers[model.keys.index(keys[0])].spec.num_heads * ids.numel() ** 2
    if cells > settings.max_attention_cells:
        raise problem(422, ["query", "length"], f"{len(keys)} layers x heads x {ids.numel()}^2 tokens is {cells} "
                      f"numbers, over the limit of {settings.max_attention_cells} (max_attention_cells); "
                      "ask for a smaller length")
    try:
        if lock is None:
            maps = attention_maps(model, ids)
        else:
            with lock:
                maps = attention_maps(model, ids)
    except ValueError as e:
        raise problem(422, ["query", "text" if text is not None else "length"], str(e))
    layers = []
    for key, p in maps.items():                                            # p: (H, T, T)
        entropy = attention_entropy(p.unsqueeze(0))                          # (H,), as the epochs report it
        layers.append(LayerAttention(key=key, heads=p.double().round(decimals=5).tolist(),
                                     entropy=entropy.double().tolist()))
    return AttentionMaps(job_id=job.id, source=weights.source, epoch=weights.epoch,
                         sample="text" if text is not None else "validation", tokens=token_labels(ids, tokenizer),
                         ids=ids.tolist(), layers=layers)
