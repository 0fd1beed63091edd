"""Routes declare the scope they need as a parameter type; nothing checks a scope by hand.

    @router.post("/enroll")
    async def enroll(principal: EnrollKey, components: ComponentsDep, ...) -> ...:

401 `unauthorized` (with `WWW-Authenticate: Bearer`) for a missing, malformed, unknown or
revoked key, 403 `forbidden` for a key without the scope, 429 `rate_limited` (with
`Retry-After`) past the key's requests per minute. The principal is also left on
`request.state.principal` (for the audit log).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import ComponentsDep, run_db
from service.auth import Principal, Scope
from service.auth.principal import SCOPES
from service.errors import Unauthorized

# Declared as security schemes so that /docs has an "Authorize" button; read without failing
# here, so that every refusal has the project's JSON error shape.
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>` (the same key)")

Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
ApiKeyHeader = Annotated[str | None, Security(api_key_header)]


async def authenticate(
    request: Request, components: ComponentsDep, credentials: Bearer, header: ApiKeyHeader
) -> Principal:
    """The caller, from `Authorization: Bearer` or `X-API-Key`; any scope. Every credential sent
    must hold: a malformed `Authorization` (an empty one counts as none), or two different keys, is
    401 rather than a guess."""
    if credentials is None and request.headers.get("authorization", "").strip():
        raise Unauthorized("the Authorization header must be `Bearer <key>`")
    if credentials is not None and header is not None and credentials.credentials != header:
        raise Unauthorized("Authorization and X-API-Key hold different keys")
    key = credentials.credentials if credentials is not None else header
    auth = components.auth
    principal = auth.verify_cached(key)  # microseconds while the key's lookup is cached
    if principal is None:
        principal = await run_db(auth.verify, key)
    return principal


def requires(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the principal, once its key is valid, has `scope` and is within its rate."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; scopes are {', '.join(SCOPES)}")

    async def dependency(
        request: Request, components: ComponentsDep, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Principal:
        components.auth.authorize(principal, scope)
        request.state.principal = principal
        return principal

    dependency.__name__ = f"requires_{scope}"
    return dependency


async def metrics_key(request: Request, components: ComponentsDep, credentials: Bearer, header: ApiKeyHeader) -> None:
    """`GET /metrics` is open (scraped on an internal network) unless FACEID_METRICS_REQUIRE_KEY:
    then any valid key may read it."""
    if components.settings.metrics_require_key:
        request.state.principal = await authenticate(request, components, credentials, header)


IdentifyKey = Annotated[Principal, Depends(requires("identify"))]
EnrollKey = Annotated[Principal, Depends(requires("enroll"))]
ReadKey = Annotated[Principal, Depends(requires("read"))]
DeleteKey = Annotated[Principal, Depends(requires("delete"))]
AdminKey = Annotated[Principal, Depends(requires("admin"))]
MetricsKey = Annotated[None, Depends(metrics_key)]
