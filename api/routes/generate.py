"""Text from a trained language model: POST /v1/jobs/{id}/generate (engine.generate's sampling loop
on the job's weights, its tokenizer turning the prompt into ids and the ids back into text)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from core.tables import Job
from engine.generate import MAX_TEMPERATURE, generate
from engine.text import LANGUAGE_MODEL, Tokenizer

from ..deps import CurrentKey, JobId, SessionDep, SettingsDep, get_owned
from ..errors import EVERY_OPERATION, error_responses, problem
from ..strict_json import StrictJSONRoute
from .jobs import NOT_FOUND
from .results import NOT_SUCCEEDED, succeeded_weights_path

router = APIRouter(route_class=StrictJSONRoute, prefix="/v1/jobs", tags=["jobs"],
                   responses=error_responses(*EVERY_OPERATION))


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "The ", "max_new_tokens": 200, "temperature": 0.8, "top_k": 40, "seed": 0}]})

    prompt: str = Field(min_length=1, max_length=100_000, description="Text to continue, in the job's tokenizer.")
    max_new_tokens: int = Field(100, ge=1, description="Tokens to add (at most the max_generate_tokens setting).")
    temperature: float = Field(1.0, ge=0, le=MAX_TEMPERATURE, description="0: greedy (the likeliest token).")
    top_k: int | None = Field(None, ge=1, description="Sample among the k likeliest tokens only.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="The same seed gives the same text.")


class GenerateResponse(BaseModel):
    text: str = Field(description="The prompt followed by the generated text.")
    generated: str = Field(description="The generated text alone.")
    ids: list[int] = Field(description="The token ids of `text`.")
    prompt_tokens: int


@router.post("/{job_id}/generate", response_model=GenerateResponse, responses={**NOT_FOUND, **NOT_SUCCEEDED},
             summary="Generate text with a trained language model")
def generate_text(job_id: JobId, body: GenerateRequest, request: Request, session: SessionDep, owner: CurrentKey,
                  settings: SettingsDep) -> GenerateResponse:
    job = get_owned(session, owner, Job, job_id, "job")
    if job.task != LANGUAGE_MODEL or job.tokenizer is None:
        raise problem(409, ["path", "job_id"], f"job {job.id!r} is a {job.task} job; generation needs a language "
                      "model (a job on a text dataset)")
    weights = succeeded_weights_path(job, settings, "it can generate")
    if body.max_new_tokens > settings.max_generate_tokens:
        raise problem(422, ["body", "max_new_tokens"], f"max_new_tokens {body.max_new_tokens} exceeds the limit "
                      f"of {settings.max_generate_tokens} (max_generate_tokens)")
    tokenizer = Tokenizer.from_dict(job.tokenizer)
    try:
        prompt = tokenizer.encode(body.prompt)
    except ValueError as e:
        raise problem(422, ["body", "prompt"], str(e))
    shape = tuple(int(d) for d in job.input_shape)
    loaded = request.app.state.model_cache.get(job.id, job.request, shape, weights)
    try:
        with loaded.lock:
            ids = generate(loaded.model, prompt, max_new_tokens=body.max_new_tokens, temperature=body.temperature,
                           top_k=body.top_k, seed=body.seed)
    except ValueError as e:
        raise problem(422, ["body"], str(e))
    return GenerateResponse(text=tokenizer.decode(ids), generated=tokenizer.decode(ids[len(prompt):]),
                            ids=ids.tolist(), prompt_tokens=len(prompt))
