"""JSON request bodies parsed as RFC 8259 JSON, by orjson, with integers that are integers.

Python's json module accepts NaN, Infinity and -Infinity, which are not JSON: a hyperparameter
of NaN then reached the validators (every comparison with NaN is false) and the error that
echoed it back could not be encoded. orjson refuses them, and invalid UTF-8, with a
JSONDecodeError, which FastAPI answers as a 422 `json_invalid` at the character at fault.

FastAPI validates the parsed body in pydantic's lax mode, where 3.0 passes for the integer 3; the
schema says "integer", so the body is first validated as JSON in strict mode, and a number with a
decimal point where an integer is meant is a 422 (the other checks stay the lax pass's).
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError


NOT_JSON_NUMBERS = (b"NaN", b"Infinity", b"-Infinity")
_WHOLE = re.compile(r"[+-]?[0-9]+")


def loads(body: bytes) -> Any:
    """orjson.loads, whose error names NaN and Infinity when that is what it stopped at."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if body[e.pos:].startswith(NOT_JSON_NUMBERS):
            raise json.JSONDecodeError("NaN and Infinity are not JSON numbers; every number must be finite",
                                       e.doc, e.pos) from None
        raise


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """FastAPI's documented way to swap the Request class of a route."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        body_type = TypeAdapter(self.body_field.field_info.annotation) if self.body_field is not None else None
        integer_queries = _integer_queries(self)

        async def strict_handler(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            if integer_queries:
                refuse_integral_query(request, integer_queries)
            if body_type is not None:
                await refuse_integral_floats(request, body_type)
            return await handler(request)
        return strict_handler


def _integer_queries(route: APIRoute) -> list[str]:
    """The names of the query parameters declared int (or int | None)."""
    return [p.alias for p in route.dependant.query_params
            if p.field_info.annotation is int or p.field_info.annotation == int | None]


def refuse_integral_query(request: Request, names: list[str]) -> None:
    """pydantic's lax mode reads the query string "3.0" (or "3e0") as 3; the schema says integer: a 422.
    What is no number at all the lax pass refuses itself."""
    bad = [{"type": "int_type", "loc": ("query", name), "input": value,
            "msg": "Input should be a valid integer, written without a decimal point or exponent"}
           for name in names for value in request.query_params.getlist(name)
           if not _WHOLE.fullmatch(value) and _is_number(value)]
    if bad:
        raise RequestValidationError(bad)


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


async def refuse_integral_floats(request: StrictJSONRequest, body_type: TypeAdapter) -> None:
    """A 422 for each number written with a decimal point (3.0) where the schema means an integer."""
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()
    try:
        loads(body)
    except ValueError:
        return                 # not JSON: FastAPI's own parse says where
    try:
        body_type.validate_json(body, strict=True)
    except ValidationError as e:
        floats = [{**err, "loc": ("body", *err["loc"]), "msg": f"{err['msg']}, written without a decimal point"}
                  for err in e.errors(include_url=False)
                  if err["type"] == "int_type" and isinstance(err.get("input"), float)]
        if floats:
            raise RequestValidationError(floats) from None
