"""JSON request bodies parsed as RFC 8259 JSON, by orjson.

Python's json module accepts NaN, Infinity and -Infinity, which are not JSON: a hyperparameter
of NaN then reached the validators (every comparison with NaN is false) and the error that
echoed it back could not be encoded. orjson refuses them, and invalid UTF-8, with a
JSONDecodeError, which FastAPI answers as a 422 `json_invalid` at the character at fault.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


NOT_JSON_NUMBERS = (b"NaN", b"Infinity", b"-Infinity")


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

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))
        return strict_handler
