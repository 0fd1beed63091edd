"""Recording who did what, from inside a route: one awaited line per write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.api.deps import ComponentsDep, run_db
from service.store.audit import AuditEntry, AuditLog


@dataclass
class Auditor:
    log: AuditLog
    key_id: int | None
    client: str | None
    request_id: str | None

    async def record(
        self,
        action: str,
        *,
        collection: str | None = None,
        identity_id: int | None = None,
        face_ids: Sequence[int] = (),
        faces: int = 0,
        status: int | None = None,
    ) -> None:
        entry = AuditEntry(
            action=action,
            key_id=self.key_id,
            collection=collection,
            identity_id=identity_id,
            face_ids=tuple(face_ids),
            faces=faces or len(face_ids),
            client=self.client,
            request_id=self.request_id,
            status=status,
        )
        await run_db(self.log.append, entry)


def get_auditor(request: Request, components: ComponentsDep) -> Auditor:
    principal = getattr(request.state, "principal", None)
    return Auditor(
        log=components.audit,
        key_id=getattr(principal, "key_id", None),
        client=request.client.host if request.client else None,
        request_id=getattr(request.state, "request_id", None),
    )


AuditDep = Annotated[Auditor, Depends(get_auditor)]
