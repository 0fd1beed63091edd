"""Domain errors. Core code raises these; `service.api.errors` maps them to HTTP.

Each error has a stable machine-readable `code` and the HTTP status it maps to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType


class FaceIdError(Exception):
    code = "error"
    status = 500
    # Response headers that go with the error (WWW-Authenticate, Retry-After).
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if headers is not None:
            self.headers = {**type(self).headers, **headers}


class ModelError(FaceIdError):
    """A model or its manifest is missing, corrupt or inconsistent (a start-up error)."""

    code = "model_error"
    status = 500


class ProviderError(ModelError):
    """The GPU was required but ONNX Runtime is not using it."""

    code = "provider_unavailable"


class InvalidInput(FaceIdError):
    code = "invalid_request"
    status = 422


class InvalidImage(FaceIdError):
    """Bytes that are not a decodable image of a supported type (empty, truncated, garbage)."""

    code = "invalid_image"
    status = 422


class UnsupportedImageType(FaceIdError):
    code = "unsupported_media_type"
    status = 415


class ImageTooLarge(FaceIdError):
    """Over the byte limit or the pixel limit (a decompression bomb)."""

    code = "image_too_large"
    status = 413


class ImageTooSmall(FaceIdError):
    """Smaller than the smallest face detection keeps (FACEID_MIN_FACE_SIZE) on either side."""

    code = "image_too_small"
    status = 422


class NoFace(FaceIdError):
    code = "no_face"
    status = 422


class AmbiguousFaces(FaceIdError):
    code = "ambiguous_faces"
    status = 422


class NotFound(FaceIdError):
    code = "not_found"
    status = 404


class Conflict(FaceIdError):
    code = "conflict"
    status = 409


class Unauthorized(FaceIdError):
    """No API key, or one that is malformed, unknown or revoked."""

    code = "unauthorized"
    status = 401
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class Forbidden(FaceIdError):
    """A valid key without the scope the route needs."""

    code = "forbidden"
    status = 403


class RateLimited(FaceIdError):
    """The key's requests per minute are used up; `Retry-After` says for how long."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(message, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


class DatabaseUnavailable(FaceIdError):
    """The database did not answer (down, restarting, out of connections, or read-only)."""

    code = "database_unavailable"
    status = 503
    headers = MappingProxyType({"Retry-After": "5"})


class StorageFull(FaceIdError):
    """The database's disk is full: nothing was written."""

    code = "insufficient_storage"
    status = 507


class Overloaded(FaceIdError):
    """More requests wait for inference (or are uploading) than the service is set to queue."""

    code = "overloaded"
    status = 503
    headers = MappingProxyType({"Retry-After": "1"})


class LowQuality(FaceIdError):
    """An enrollment photo whose face is `low` for recognition (blurry, dark, turned away...)."""

    code = "low_quality"
    status = 422


class IdentityConflict(FaceIdError):
    """An enrollment photo whose face already matches another identity of the collection."""

    code = "identity_conflict"
    status = 409
