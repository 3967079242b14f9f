"""What the generated OpenAPI document cannot know from the models alone, written into it once, so
that it says exactly what the service enforces:

- bounds that are settings (plot sizes, landscape and gradient-check limits): the deployment's own
  values, as minimum / maximum;
- one-of constraints that a model validator checks (a gradient check's input_shape or dataset_id;
  a sweep parameter's four forms);
- `stop_on`'s values, the diagnostics rules, as an enum;
- the schemas of the event stream's data (api.event_schemas);
- every integer's range where the model gives none: a 64-bit integer, as the JSON parser reads.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from core.settings import Settings
from core.sweeps.spec import FORMS
from engine.spec.diagnostics import RULES

from .event_schemas import component_schemas

INT64 = (-2**63, 2**63 - 1)
PLOT_PATH = "/v1/jobs/{job_id}/plots/{kind}.png"
# request schema -> {field: the setting that is its maximum}
MAXIMA = {
    "LandscapeRequest": {"points": "landscape_max_points", "grid": "landscape_max_grid",
                         "samples": "landscape_max_samples", "iterations": "hessian_max_iterations",
                         "trace_samples": "hessian_max_trace_samples", "density_steps": "hessian_max_iterations"},
    "GradcheckRequest": {"batch_size": "gradcheck_max_batch_size", "coordinates": "gradcheck_max_coordinates"},
}


def install(app: FastAPI, settings: Settings) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(generate(), settings)     # generate() caches the document it returns in app.openapi_schema
        return app.openapi_schema
    app.openapi = openapi


def complete(doc: dict[str, Any], settings: Settings) -> None:
    schemas = doc["components"]["schemas"]
    for name, schema in component_schemas().items():
        schemas.setdefault(name, schema)
    for param in doc["paths"][PLOT_PATH]["get"]["parameters"]:
        if param["name"] in ("width", "height"):
            param["schema"].update(minimum=settings.plot_min_px, maximum=settings.plot_max_px)
    for model, fields in MAXIMA.items():
        for field, setting in fields.items():
            prop = schemas[model]["properties"][field]
            prop["maximum"] = min(prop.get("maximum", getattr(settings, setting)), getattr(settings, setting))
    schemas["GradcheckRequest"]["oneOf"] = [{"required": ["input_shape"]}, {"required": ["dataset_id"]}]
    schemas["Parameter"]["oneOf"] = [{"required": [form], "properties": {
        other: ({"not": {"type": "null"}} if other == form else {"type": "null"}) for other in FORMS}}
        for form in FORMS]
    schemas["Diagnostics"]["properties"]["stop_on"]["items"] = {"type": "string", "enum": list(RULES)}
    _bound_integers(doc)


def _bound_integers(node: Any) -> None:
    """Each integer schema without a minimum or maximum gets the 64-bit one."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("minimum", INT64[0])
            node.setdefault("maximum", INT64[1])
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)
