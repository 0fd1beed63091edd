"""The audit log (admin): who did what to whose faces, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from service.api.auth import AdminKey
from service.api.deps import ComponentsDep, run_db
from service.api.responses import AUTH
from service.api.schemas import MAX_ID, AuditEntryPublic, AuditList
from service.store.audit import AuditQuery

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=AuditList, responses=AUTH, summary="The audit log, filtered and paged")
async def audit_log(
    _: AdminKey,
    components: ComponentsDep,
    collection: Annotated[str | None, Query(max_length=64)] = None,
    identity_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    key_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    action: Annotated[str | None, Query(max_length=40)] = None,
    since: Annotated[datetime | None, Query(description="entries at or after this time (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="entries before this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> AuditList:
    where = AuditQuery(
        collection=collection, identity_id=identity_id, key_id=key_id, action=action, since=since, until=until
    )
    entries, total = await run_db(lambda: components.audit.query(where, limit=limit, offset=offset))
    return AuditList(items=[AuditEntryPublic.of(e) for e in entries], total=total)
