"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import RuntimeDep
from service.runtime import Phase

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    body: dict[str, object] = {"status": runtime.phase.value, "engine": runtime.engine.info().name}
    if runtime.phase is Phase.READY and runtime.engine.ready:
        body["serving"] = runtime.registry.public_name(runtime.registry.serving)
        return JSONResponse(body)
    if runtime.phase is Phase.READY:  # the engine stopped; a new one is starting
        body["status"] = "engine_restarting"
    if runtime.error:
        body["error"] = runtime.error
    return JSONResponse(body, status_code=503)


@router.get("/metrics")
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
