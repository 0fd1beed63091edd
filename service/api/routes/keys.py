"""API keys (admin): create one (the key is shown once), list them, revoke one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel, Field, StringConstraints

from service.api.auth import AdminKey
from service.api.deps import ComponentsDep, run_db
from service.api.responses import AUTH
from service.api.schemas import ErrorResponse, Printable
from service.auth import KeyRecord, Scope
from service.auth.principal import SCOPES
from service.errors import Conflict

router = APIRouter(prefix="/keys", tags=["keys"])

KeyId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The key's id.")]


class KeyCreate(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100), Printable] = Field(examples=["shop-frontend"])
    scopes: list[Scope] = Field(min_length=1, description=f"Any of {', '.join(SCOPES)}.", examples=[["identify"]])
    collections: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The collections the key may use; left out, every collection. Not for admin keys.",
        examples=[["shop"]],
    )
    rate_limit: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="Requests per minute; left out, FACEID_RATE_LIMIT_PER_MINUTE; 0, no limit.",
    )


class KeyPublic(BaseModel):
    """A key as listed: its public prefix, never the key or its hash."""

    id: int
    name: str
    prefix: str = Field(description="The key's public start: it names the key in lists, logs and revocations.")
    scopes: list[str]
    collections: list[str] | None = Field(description="null: every collection.")
    rate_limit: int | None = Field(description="Requests per minute; null: the service's default; 0: no limit.")
    created_at: datetime
    revoked_at: datetime | None
    active: bool

    @classmethod
    def of(cls, record: KeyRecord) -> KeyPublic:
        return cls(
            id=record.id,
            name=record.name,
            prefix=record.prefix,
            scopes=[s for s in SCOPES if s in record.scopes],
            collections=None if record.collections is None else sorted(record.collections),
            rate_limit=record.rate_limit,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
            active=record.active,
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself. Shown this once: only its hash is stored.")


class KeyList(BaseModel):
    items: list[KeyPublic]


@router.post(
    "",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        **AUTH,
        409: {"model": ErrorResponse, "description": "A key with this name exists."},
        422: {
            "model": ErrorResponse,
            "description": "Unknown scope, bad collection name, or an admin key restricted to collections.",
        },
    },
    summary="Create a key (shown once)",
)
async def create_key(_: AdminKey, components: ComponentsDep, body: KeyCreate) -> KeyCreated:
    keys = components.auth.keys
    record, key = await run_db(
        lambda: keys.create(body.name, frozenset(body.scopes), collections=body.collections, rate_limit=body.rate_limit)
    )
    return KeyCreated(**KeyPublic.of(record).model_dump(), key=key)


@router.get("", response_model=KeyList, responses=AUTH, summary="List keys (never the keys themselves)")
async def list_keys(_: AdminKey, components: ComponentsDep) -> KeyList:
    records = await run_db(components.auth.keys.list_keys)
    return KeyList(items=[KeyPublic.of(r) for r in records])


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **AUTH,
        404: {"model": ErrorResponse, "description": "No key has this id."},
        409: {"model": ErrorResponse, "description": "The key making the request cannot revoke itself."},
    },
    summary="Revoke a key",
)
async def revoke_key(principal: AdminKey, components: ComponentsDep, key_id: KeyId) -> Response:
    """The key stops working here at once and in every other process and replica within
    FACEID_AUTH_CACHE_SECONDS. It stays listed, revoked (the audit log names it). A key cannot
    revoke itself (so an admin cannot lock everyone out by mistake): to rotate the admin key,
    create a new one and revoke the old one with it."""
    if principal.key_id == key_id:
        raise Conflict("a key cannot revoke itself; revoke it with another admin key")
    await run_db(components.auth.keys.revoke, key_id)
    components.auth.forget()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
