"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.api.deps import ComponentsDep, run_db
from service.api.routes.recognition import model_public
from service.api.schemas import Health, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Not ready: database unreachable or gallery out of sync."}},
    summary="Models loaded, database reachable, gallery in sync",
)
async def ready(components: ComponentsDep) -> JSONResponse:
    recognizer = components.recognizer
    database_error = None
    try:
        # Apply pending changes first, so a write that just committed is not reported as drift.
        status = await run_db(lambda: (recognizer.sync(), recognizer.gallery_status())[1])
        searchable: int | None = status.searchable_in_db
        others = status.other_models
    except Exception as exc:  # the database is down: say so, do not crash
        database_error = f"{type(exc).__name__}: {exc}"[:300]
        searchable, others = None, {}
    size = recognizer.gallery.size
    in_sync = searchable is not None and searchable == size
    body = ReadyResponse(
        ready=database_error is None and in_sync,
        model=model_public(components),
        detector=recognizer.detector.name,
        database="ok" if database_error is None else "unreachable",
        database_error=database_error,
        gallery_size=size,
        gallery_device=recognizer.gallery.device,
        gallery_index=components.settings.gallery_index,
        searchable_faces_in_db=searchable,
        faces_of_other_models=others,
        in_sync=in_sync,
    )
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump(mode="json"))


@router.get("/metrics", include_in_schema=False)
async def metrics(components: ComponentsDep) -> Response:
    components.metrics.gallery_size.set(components.recognizer.gallery.size)
    return Response(components.metrics.render(), media_type="text/plain; version=0.0.4")
