"""The documented error answers of the routes (OpenAPI `responses`), in one place."""

from __future__ import annotations

from service.api.schemas import ErrorResponse

Responses = dict[int | str, dict[str, object]]


def _error(description: str) -> dict[str, object]:
    return {"model": ErrorResponse, "description": description}


AUTH: Responses = {
    401: _error("No key, or a wrong or revoked one (`unauthorized`, with `WWW-Authenticate: Bearer`)."),
    403: _error("The key lacks the scope this route needs (`forbidden`)."),
    429: _error("Over the key's rate limit (`rate_limited`, with `Retry-After`)."),
}
NOT_FOUND: Responses = {404: _error("No such collection, identity or face, or one the key may not see.")}
IMAGES: Responses = {
    413: _error("An image over the byte or pixel limit, or a request over the size limit."),
    415: _error("An image type that is not supported."),
    422: _error("Invalid request, unreadable image or no face."),
}
CONFLICT: Responses = {
    409: _error(
        "external_id already in use, every face already another identity's (`identity_conflict`), "
        "or the collection's model differs (`model_mismatch`)."
    )
}
