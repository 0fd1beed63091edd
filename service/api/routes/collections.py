"""Collections: create, list, inspect, delete. Their people and recognition routes live under
/collections/{name}/... (the same routes as at the root, which serve `default`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.api.audit import AuditDep
from service.api.auth import AdminKey, ReadKey
from service.api.deps import COLLECTION_NAME, ComponentsDep, run_db
from service.api.responses import AUTH, NOT_FOUND
from service.api.schemas import CollectionCreate, CollectionList, CollectionPublic, ErrorResponse, ThresholdNow
from service.auth.principal import Principal
from service.collections import DEFAULT, CollectionState
from service.errors import InvalidInput, NotFound

router = APIRouter(prefix="/collections", tags=["collections"])
CollectionName = Annotated[str, Path(pattern=COLLECTION_NAME, description="The collection's name.")]


def public(state: CollectionState, counts: dict[int, tuple[int, int]]) -> CollectionPublic:
    record = state.record
    size = state.gallery.size
    choice = state.threshold.choose(size, state.self_tail).public()
    people, faces = counts.get(record.id, (0, 0))
    return CollectionPublic(
        name=record.name,
        model=record.model,
        target_fpir=record.target_fpir,
        fixed_threshold=record.threshold,
        identities=people,
        faces=faces,
        gallery_size=size,
        threshold=ThresholdNow(
            value=choice["threshold"],
            source=choice["threshold_source"],
            expected_fpir=choice["expected_fpir"],
            fpir_interval=choice["fpir_interval"],
            pairs=choice["pairs"],
            extrapolated=choice["extrapolated"],
        ),
        created_at=record.created_at,
    )


def visible(components: ComponentsDep, principal: Principal, name: str) -> CollectionState:
    if not principal.sees(name):
        raise NotFound(f"collection {name!r} does not exist")
    return components.collections.state(name)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionPublic,
    responses={**AUTH, 409: {"model": ErrorResponse, "description": "A collection of that name exists."}},
    summary="Create a collection",
)
async def create_collection(
    _: AdminKey, components: ComponentsDep, audit: AuditDep, body: CollectionCreate
) -> CollectionPublic:
    """A new, empty collection pinned to the service's embedding model, with its own gallery and its own
    gallery-aware threshold (at `target_fpir`, or the service's), or a fixed `threshold`."""
    if body.target_fpir is not None and body.threshold is not None:
        raise InvalidInput("give target_fpir or threshold, not both")
    state = await run_db(
        lambda: components.collections.create(body.name, target_fpir=body.target_fpir, threshold=body.threshold)
    )
    await audit.record("create_collection", collection=body.name, status=201)
    return public(state, {})


@router.get("", response_model=CollectionList, responses=AUTH, summary="The collections this key may see")
async def list_collections(principal: ReadKey, components: ComponentsDep) -> CollectionList:
    counts = await run_db(components.collections.store.collection_counts)
    await run_db(components.collections.sync)
    states = [s for s in components.collections.all() if principal.sees(s.record.name)]
    return CollectionList(items=[public(s, counts) for s in states])


@router.get(
    "/{name}",
    response_model=CollectionPublic,
    responses={**AUTH, **NOT_FOUND},
    summary="A collection: its size, model and threshold now",
)
async def get_collection(principal: ReadKey, components: ComponentsDep, name: CollectionName) -> CollectionPublic:
    state = await run_db(visible, components, principal, name)
    counts = await run_db(components.collections.store.collection_counts)
    return public(state, counts)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**AUTH, **NOT_FOUND, 409: {"model": ErrorResponse, "description": "`default` cannot be deleted."}},
    summary="Delete a collection with its identities and faces",
)
async def delete_collection(_: AdminKey, components: ComponentsDep, audit: AuditDep, name: CollectionName) -> Response:
    """Its identities and faces (embeddings included) go in one transaction, and from every gallery."""
    if name == DEFAULT:
        from service.errors import Conflict

        raise Conflict("the default collection cannot be deleted; delete its identities instead")
    removed = await run_db(components.collections.delete, name)
    await audit.record("delete_collection", collection=name, face_ids=removed, status=204)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
