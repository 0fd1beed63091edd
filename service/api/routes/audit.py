"""The audit log (admin): who did what to whose faces, newest first."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BeforeValidator, StringConstraints

from service.api.auth import AdminKey
from service.api.deps import ComponentsDep, run_db
from service.api.responses import AUTH
from service.api.schemas import MAX_ID, AuditEntryPublic, AuditList, Printable
from service.store.audit import AuditQuery

router = APIRouter(tags=["audit"])
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def rfc3339(value: object) -> object:
    """The schema's `date-time` exactly: pydantic alone would also take a bare number (a Unix time)."""
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


Time = Annotated[datetime, BeforeValidator(rfc3339)]


@router.get("/audit", response_model=AuditList, responses=AUTH, summary="The audit log, filtered and paged")
async def audit_log(
    _: AdminKey,
    components: ComponentsDep,
    collection: Annotated[Annotated[str, StringConstraints(max_length=64), Printable] | None, Query()] = None,
    identity_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    key_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: Annotated[Annotated[str, StringConstraints(max_length=40), Printable] | None, Query()] = None,
    since: Annotated[Time | None, Query(description="entries at or after this time (RFC 3339)")] = None,
    until: Annotated[Time | None, Query(description="entries before this time (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> AuditList:
    where = AuditQuery(
        collection=collection, identity_id=identity_id, key_id=key_id, action=action, since=since, until=until
    )
    entries, total = await run_db(lambda: components.audit.query(where, limit=limit, offset=offset))
    return AuditList(items=[AuditEntryPublic.of(e) for e in entries], total=total)
