"""The OpenAPI schema, completed with what FastAPI cannot see: each route's error answers and path limits.

The error statuses of a route follow from what the route is (it takes a body, has path parameters,
needs a key, writes, uses the catalog), so they stay true as routes are added; each is documented with
the one error body model. Path parameters get the schemas of the policy types that
``check_path_parameters`` applies to them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from service.deps import get_catalog, require_read, require_write
from service.schemas import ErrorResponse
from service.validation import PATH_PARAMETERS

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
DESCRIPTIONS = {
    400: "Bad request: a value the input policy refuses (see README, Limits), or one the operation cannot use",
    401: "No API key, or an unknown one",
    403: "A read-only key on a write",
    404: "Unknown collection, point, job, upgrade or model",
    409: "Exists already, or conflicts with the collection's state",
    413: "Request body larger than TROVE_MAX_REQUEST_BYTES",
    422: "The body or a parameter does not match the schema",
    429: "Too many requests in flight; retry after Retry-After seconds",
    500: "Internal error; the connection stays usable",
    503: "Not ready: collections are still loading, or this one could not load",
}


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def error_statuses(route: RouteContext) -> list[int]:
    calls = set(_calls(route.dependant))
    has_body, path = route.body_field is not None, bool(route.dependant.path_params)
    statuses = {429, 500}
    statuses |= {400, 404} if has_body or path else set()
    statuses |= {422} if has_body or path or route.dependant.query_params else set()
    statuses |= {401} if calls & {require_read, require_write} else set()
    statuses |= {403, 409} if require_write in calls else set()
    statuses |= {413} if route.methods & {"POST", "PUT", "PATCH"} else set()
    statuses |= {503} if get_catalog in calls else set()
    return sorted(statuses)


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _complete(app, get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorResponse"] = error_schema
    # Route contexts, as get_openapi sees them: an included router's routes with its prefix and dependencies.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods:
            operation = schema["paths"][route.path_format][method.lower()]
            responses = operation.setdefault("responses", {})
            for status in error_statuses(route):
                if str(status) == "422" or str(status) not in responses:  # FastAPI's own 422 names its model, not ours
                    responses[str(status)] = {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}}
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in PATH_PARAMETERS:
                    parameter["schema"] = {**PATH_PARAMETERS[parameter["name"]].json_schema(), "title": parameter["name"]}
    for replaced in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 models, unless a route still names one
        if f"#/components/schemas/{replaced}" not in json.dumps(schema["paths"]):
            components.pop(replaced, None)
    return schema
