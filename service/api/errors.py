"""One place that turns errors into `{"error": {"code", "message"}}` responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from service.errors import FaceIdError

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


def _body_error(cause: BaseException) -> JSONResponse:
    if isinstance(cause, BodyTooLarge):
        return error_response(413, "payload_too_large", str(cause))
    message = str(cause) or type(cause).__name__
    if isinstance(cause, MultiPartException) and "too many files" in message.lower():
        return error_response(422, "too_many_files", message)
    return error_response(422, "invalid_request", f"the request body could not be read: {message}")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FaceIdError)
    async def _domain(_: Request, exc: FaceIdError) -> JSONResponse:
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        response = error_response(exc.status, exc.code, exc.message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # Only reading the body gives 400 here (FastAPI's bare "error parsing the body",
            # Starlette's multipart limits): say which, with the documented statuses.
            return _body_error(exc.__cause__ or MultiPartException(str(exc.detail)))
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        response = error_response(exc.status_code, code, str(exc.detail))
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
