"""The gallery's people: list, read, rename, delete, add and remove faces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Query, Response, UploadFile, status

from service.api.deps import ComponentsDep, read_uploads, run_blocking, run_db
from service.api.routes.recognition import ERRORS, finish
from service.api.schemas import (
    EnrollResponse,
    ErrorResponse,
    FaceList,
    FacePublic,
    IdentityList,
    IdentityPublic,
    IdentityUpdate,
    Printable,
)
from service.errors import InvalidInput
from service.timing import Timings

router = APIRouter(prefix="/identities", tags=["identities"])

IdentityId = Annotated[int, Path(ge=1, description="Identity id.")]
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorResponse, "description": "Unknown id."}}


@router.get("", response_model=IdentityList, summary="List identities")
async def list_identities(
    components: ComponentsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    name: Annotated[
        Annotated[str, Printable] | None,
        Query(max_length=200, description="Case-insensitive substring of the name."),
    ] = None,
) -> IdentityList:
    items, total = await run_db(
        lambda: components.recognizer.store.list_identities(limit=limit, offset=offset, name=name)
    )
    return IdentityList(items=[IdentityPublic.of(i) for i in items], total=total)


@router.get("/{identity_id}", response_model=IdentityPublic, responses=NOT_FOUND, summary="One identity")
async def get_identity(components: ComponentsDep, identity_id: IdentityId) -> IdentityPublic:
    record = await run_db(components.recognizer.store.get_identity, identity_id)
    return IdentityPublic.of(record)


@router.patch(
    "/{identity_id}",
    response_model=IdentityPublic,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "external_id already in use."}},
    summary="Rename, or change the external id",
)
async def update_identity(components: ComponentsDep, identity_id: IdentityId, body: IdentityUpdate) -> IdentityPublic:
    fields = body.model_fields_set
    if not fields:
        raise InvalidInput("nothing to update: send name and/or external_id")
    name = body.name.strip() if body.name is not None else None
    if "name" in fields and not name:
        raise InvalidInput("name: must not be blank")
    record = await run_db(
        lambda: components.recognizer.store.update_identity(
            identity_id,
            name=name,
            external_id=body.external_id,
            clear_external_id="external_id" in fields and body.external_id is None,
        ),
    )
    return IdentityPublic.of(record)


@router.delete("/{identity_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND, summary="Forget a person")
async def delete_identity(components: ComponentsDep, identity_id: IdentityId) -> Response:
    """Removes the identity and all its faces from the database and the gallery."""
    await run_db(components.recognizer.delete_identity, identity_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{identity_id}/faces", response_model=FaceList, responses=NOT_FOUND, summary="An identity's faces")
async def list_faces(components: ComponentsDep, identity_id: IdentityId) -> FaceList:
    faces = await run_db(components.recognizer.store.list_faces, identity_id)
    return FaceList(items=[FacePublic.of(f) for f in faces])


@router.post(
    "/{identity_id}/faces",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    responses={**ERRORS, **NOT_FOUND},
    summary="Add photos to an identity",
)
async def add_faces(
    components: ComponentsDep,
    response: Response,
    identity_id: IdentityId,
    images: Annotated[list[UploadFile], File(description="One or more photos, at most 20.")],
) -> EnrollResponse:
    data = await read_uploads(images, components.settings)
    timings = Timings()
    result = await run_blocking(components, lambda: components.recognizer.add_faces(identity_id, data, timings))
    finish(response, components, timings)
    return EnrollResponse.of(result)


@router.delete(
    "/{identity_id}/faces/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=NOT_FOUND,
    summary="Remove one face",
)
async def delete_face(
    components: ComponentsDep, identity_id: IdentityId, face_id: Annotated[int, Path(ge=1)]
) -> Response:
    await run_db(components.recognizer.delete_face, identity_id, face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
