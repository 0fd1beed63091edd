"""Liveness, readiness and metrics."""

from __future__ import annotations

import logging
import os
import socket

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from service.api.auth import MetricsKey
from service.api.deps import ComponentsDep, run_db
from service.api.routes.recognition import model_public
from service.api.schemas import Health, ReadyResponse

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
# Which process answered: replicas and workers each hold their own gallery.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


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
    collections = components.collections
    database_error = None
    try:
        # Applies pending changes first, so a write that just committed is not reported as drift,
        # and rebuilds the galleries if they differ from the database.
        status = await run_db(collections.check)
        searchable: int | None = status.searchable_in_db
        others = status.other_models
        in_sync = status.in_sync
        repairs = status.drift_repairs
    except Exception as exc:  # the database is down: say so in a word, log the detail
        log.warning("readiness: the database did not answer: %s", exc)
        database_error = database_error_code(exc)
        searchable, others, in_sync, repairs = None, {}, False, collections.drift_repairs
    states = collections.all()
    body = ReadyResponse(
        ready=database_error is None and in_sync,
        model=model_public(components),
        detector=collections.analyzer.detector.name,
        database="ok" if database_error is None else "unreachable",
        database_error=database_error,
        gallery_size=collections.size,
        gallery_device=states[0].gallery.device if states else "cpu",
        gallery_index=components.settings.gallery_index,
        collections=len(states),
        searchable_faces_in_db=searchable,
        faces_of_other_models=others,
        in_sync=in_sync,
        gallery_fingerprint=list(collections.fingerprint()),
        drift_repairs=repairs,
        process=PROCESS,
    )
    return JSONResponse(status_code=200 if body.ready else 503, content=body.model_dump(mode="json"))


def database_error_code(exc: Exception) -> str:
    """A short, safe word for a database failure: never the driver's text (host, port, SQL)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return "unavailable"
    if isinstance(exc, DBAPIError):
        return "query_failed"
    return "error"


@router.get("/metrics", include_in_schema=False)
async def metrics(_: MetricsKey, components: ComponentsDep) -> Response:
    components.metrics.gallery_size.set(components.collections.size)
    return Response(components.metrics.render(), media_type="text/plain; version=0.0.4")
