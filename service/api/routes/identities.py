"""The people of a collection: list, read, rename, delete, add and remove faces, export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Query, Response, UploadFile, status
from pydantic import StringConstraints

from service.api.audit import AuditDep
from service.api.auth import AdminKey, DeleteKey, EnrollKey, ReadKey
from service.api.deps import ComponentsDep, RecognizerDep, read_uploads, run_blocking, run_db
from service.api.responses import AUTH, CONFLICT, IMAGES, NOT_FOUND
from service.api.routes.recognition import AllowConflict, finish
from service.api.schemas import (
    MAX_ID,
    AuditEntryPublic,
    EnrollResponse,
    FaceList,
    FacePublic,
    IdentityExport,
    IdentityList,
    IdentityPublic,
    IdentityUpdate,
    Printable,
)
from service.errors import InvalidInput
from service.store.audit import AuditQuery
from service.timing import Timings

router = APIRouter(prefix="/identities", tags=["identities"])

IdentityId = Annotated[int, Path(ge=1, le=MAX_ID, description="Identity id.")]
FaceId = Annotated[int, Path(ge=1, le=MAX_ID, description="Face id.")]
ERRORS = {**AUTH, **NOT_FOUND}


@router.get("", response_model=IdentityList, responses=ERRORS, summary="List identities")
async def list_identities(
    _: ReadKey,
    recognizer: RecognizerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    name: Annotated[
        Annotated[str, StringConstraints(max_length=200), Printable] | None,
        Query(description="Case-insensitive substring of the name."),
    ] = None,
) -> IdentityList:
    items, total = await run_db(lambda: recognizer.store.list_identities(limit=limit, offset=offset, name=name))
    return IdentityList(items=[IdentityPublic.of(i) for i in items], total=total)


@router.get("/{identity_id}", response_model=IdentityPublic, responses=ERRORS, summary="One identity")
async def get_identity(_: ReadKey, recognizer: RecognizerDep, identity_id: IdentityId) -> IdentityPublic:
    return IdentityPublic.of(await run_db(recognizer.store.get_identity, identity_id))


@router.patch(
    "/{identity_id}",
    response_model=IdentityPublic,
    responses={**ERRORS, **CONFLICT},
    summary="Rename, or change the external id",
)
async def update_identity(
    _: EnrollKey, recognizer: RecognizerDep, audit: AuditDep, identity_id: IdentityId, body: IdentityUpdate
) -> IdentityPublic:
    fields = body.model_fields_set
    if not fields:
        raise InvalidInput("nothing to update: send name and/or external_id")
    name = body.name.strip() if body.name is not None else None
    if "name" in fields and not name:
        raise InvalidInput("name: must not be blank")
    record = await run_db(
        lambda: recognizer.store.update_identity(
            identity_id,
            name=name,
            external_id=body.external_id,
            clear_external_id="external_id" in fields and body.external_id is None,
        ),
    )
    await audit.record("update_identity", collection=recognizer.collection.name, identity_id=identity_id, status=200)
    return IdentityPublic.of(record)


@router.delete(
    "/{identity_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Forget a person",
)
async def delete_identity(
    _: DeleteKey, recognizer: RecognizerDep, audit: AuditDep, identity_id: IdentityId
) -> Response:
    """Removes the identity and all its faces (embeddings included) from the database, in one
    transaction, and from every gallery; see the README for what a deletion guarantees on disk."""
    removed = await run_db(recognizer.delete_identity, identity_id)
    await audit.record(
        "delete_identity", collection=recognizer.collection.name, identity_id=identity_id, face_ids=removed, status=204
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{identity_id}/faces", response_model=FaceList, responses=ERRORS, summary="An identity's faces")
async def list_faces(_: ReadKey, recognizer: RecognizerDep, identity_id: IdentityId) -> FaceList:
    faces = await run_db(recognizer.store.list_faces, identity_id)
    return FaceList(items=[FacePublic.of(f) for f in faces])


@router.post(
    "/{identity_id}/faces",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    responses={**ERRORS, **IMAGES},
    summary="Add photos to an identity",
)
async def add_faces(
    _: EnrollKey,
    recognizer: RecognizerDep,
    components: ComponentsDep,
    audit: AuditDep,
    response: Response,
    identity_id: IdentityId,
    images: Annotated[list[UploadFile], File(description="One or more photos, at most 20.")],
    allow_conflict: AllowConflict = False,
) -> EnrollResponse:
    data = await read_uploads(images, components.settings)
    timings = Timings()
    result = await run_blocking(
        components, lambda: recognizer.add_faces(identity_id, data, timings, allow_conflict=allow_conflict)
    )
    finish(response, components, timings)
    await audit.record(
        "add_faces",
        collection=recognizer.collection.name,
        identity_id=identity_id,
        face_ids=[a.face_id for a in result.accepted],
        status=201,
    )
    return EnrollResponse.of(result)


@router.delete(
    "/{identity_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
    summary="Remove one face",
)
async def delete_face(
    _: DeleteKey, recognizer: RecognizerDep, audit: AuditDep, identity_id: IdentityId, face_id: FaceId
) -> Response:
    await run_db(recognizer.delete_face, identity_id, face_id)
    await audit.record(
        "delete_face", collection=recognizer.collection.name, identity_id=identity_id, face_ids=[face_id], status=204
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{identity_id}/export",
    response_model=IdentityExport,
    responses=ERRORS,
    summary="Everything stored about a person (a GDPR access request)",
)
async def export_identity(
    _: AdminKey, recognizer: RecognizerDep, components: ComponentsDep, audit: AuditDep, identity_id: IdentityId
) -> IdentityExport:
    """The identity's record, its faces' metadata (never the embeddings) and the audit entries about it."""
    collection = recognizer.collection.name
    identity = await run_db(recognizer.store.get_identity, identity_id)
    faces = await run_db(recognizer.store.list_faces, identity_id)
    entries, _total = await run_db(
        lambda: components.audit.query(
            AuditQuery(collection=collection, identity_id=identity_id), limit=10_000, offset=0
        )
    )
    await audit.record("export_identity", collection=collection, identity_id=identity_id, status=200)
    return IdentityExport(
        collection=collection,
        identity=IdentityPublic.of(identity),
        faces=[FacePublic.of(f) for f in faces],
        audit=[AuditEntryPublic.of(e) for e in entries],
    )
