"""One place that turns errors into `{"error": {"code", "message"}}` responses."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from service.errors import DatabaseUnavailable, FaceIdError, StorageFull

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class BodyTooLarge(Exception):
    """Raised while the body is read, once it passes the size limit (`service.app.BodyLimit`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request is over {limit} bytes")


class BodyTimeout(Exception):
    """Raised while the body is read, once it has taken longer than FACEID_BODY_TIMEOUT."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout:g} s")


def _body_error(cause: BaseException) -> JSONResponse:
    if isinstance(cause, BodyTooLarge):
        return error_response(413, "payload_too_large", str(cause))
    if isinstance(cause, BodyTimeout):
        return error_response(408, "request_timeout", str(cause))
    message = str(cause) or type(cause).__name__
    if isinstance(cause, MultiPartException) and "too many files" in message.lower():
        return error_response(422, "too_many_files", message)
    return error_response(422, "invalid_request", f"the request body could not be read: {message}")


def allowed_methods(request: Request, given: str) -> str:
    """Every method some route serves at this path. Starlette's own 405 (`given`) names only the
    first route whose path matches, and several routes share a path (GET and DELETE /identities/{id});
    the published paths say them all."""
    methods = {m.strip().upper() for m in given.split(",") if m.strip()}
    path = request.scope.get("path", "")
    for template, operations in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in operations if m.upper() in _METHODS}
    return ", ".join(sorted(methods))


_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


def database_error(exc: Exception) -> FaceIdError | None:
    """The domain error for a database failure the client can do nothing about but wait (the
    connection refused or lost, the pool exhausted, SQLite locked or read-only), or a full disk;
    None for anything else (a bug: 500). The driver's text stays in the log."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    if isinstance(exc, sa.OperationalError) and ("disk is full" in text or "no space left" in text):
        return StorageFull("the database's disk is full; nothing was written")
    if isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError) or (
        isinstance(exc, sa.DBAPIError) and exc.connection_invalidated
    ):
        return DatabaseUnavailable("the database is unavailable; try again shortly")
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FaceIdError)
    async def _domain(_: Request, exc: FaceIdError) -> JSONResponse:
        if exc.status >= 500 and exc.status != 503:  # 503s (database away, overload) are logged where raised
            log.error("%s: %s", exc.code, exc.message)
        response = error_response(exc.status, exc.code, exc.message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # Only reading the body gives 400 here (FastAPI's bare "error parsing the body",
            # Starlette's multipart limits): say which, with the documented statuses.
            return _body_error(exc.__cause__ or MultiPartException(str(exc.detail)))
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        response = error_response(exc.status_code, code, str(exc.detail))
        if headers:
            response.headers.update(headers)
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request, (headers or {}).get("Allow", ""))
        return response

    @app.exception_handler(sa.DBAPIError)
    @app.exception_handler(sa.TimeoutError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        domain = database_error(exc)
        if domain is None:
            return await _unexpected(request, exc)
        log.warning("%s: %s: %s", domain.code, type(exc).__name__, (str(exc).splitlines() or [""])[0])
        return await _domain(request, domain)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
