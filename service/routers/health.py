"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from service.errors import error_response
from service.schemas import ErrorResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses={503: {"model": ErrorResponse, "description": "Still replaying collections (Retry-After)"}})
def readyz(request: Request) -> dict[str, str] | Response:
    catalog = request.app.state.catalog
    if not catalog.ready.is_set():
        done, total = catalog.progress
        return error_response(
            503,
            "not_ready",
            f"loading collections: their sealed segments, then the rows their stores hold beyond them ({done} of {total} loaded)",
            {"collections_loaded": done, "collections_total": total},
            headers={"Retry-After": "2"},
        )
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
