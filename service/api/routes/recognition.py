"""Enroll, identify, verify, detect: in the collection of the path, or in `default`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from service.api.audit import AuditDep
from service.api.auth import EnrollKey, IdentifyKey
from service.api.deps import Components, ComponentsDep, RecognizerDep, read_upload, read_uploads, run_blocking
from service.api.responses import AUTH, CONFLICT, IMAGES, NOT_FOUND
from service.api.schemas import (
    MAX_ID,
    DetectedFace,
    DetectResponse,
    EnrollResponse,
    ExternalIdText,
    IdentifyResponse,
    ModelPublic,
    NameText,
    VerifyResponse,
)
from service.errors import InvalidInput
from service.timing import Timings

router = APIRouter(tags=["recognition"])

Name = Annotated[NameText, Form(description="Display name.", examples=["Ada Lovelace"])]
ExternalId = Annotated[
    ExternalIdText | None, Form(description="Your own unique key for this person (in this collection).")
]
Images = Annotated[list[UploadFile], File(description="One or more photos (repeat the field), at most 20.")]
AllowConflict = Annotated[
    bool,
    Form(description="Enroll faces that already match another identity of the collection (one person, twice)."),
]
Threshold = Annotated[
    float | None, Form(ge=-1.0, le=1.0, description="Cosine threshold for this request; default: the service's policy.")
]


def model_public(components: Components) -> ModelPublic:
    embedder = components.collections.analyzer.embedder
    return ModelPublic(
        name=embedder.manifest.name,
        version=embedder.manifest.version,
        embedding_size=embedder.manifest.embedding_size,
        provider=embedder.provider,
    )


def finish(response: Response, components: Components, timings: Timings) -> None:
    response.headers["Server-Timing"] = timings.header()
    components.metrics.observe(timings)


def clean_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("name: must not be blank")
    return name


@router.post(
    "/enroll",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    responses={**AUTH, **NOT_FOUND, **IMAGES, **CONFLICT},
    summary="Register a person from one or more photos",
)
async def enroll(
    _: EnrollKey,
    recognizer: RecognizerDep,
    components: ComponentsDep,
    audit: AuditDep,
    response: Response,
    name: Name,
    images: Images,
    external_id: ExternalId = None,
    allow_conflict: AllowConflict = False,
) -> EnrollResponse:
    """Creates an identity from every image that yields a face. Per image the largest face is used; an
    image where a second face is at least half as large is rejected as `ambiguous_faces`. If no image
    gives a face the answer is 422 `no_face` and nothing is stored."""
    name = clean_name(name)
    data = await read_uploads(images, components.settings)
    timings = Timings()
    result = await run_blocking(
        components,
        lambda: recognizer.enroll(name, data, external_id=external_id, timings=timings, allow_conflict=allow_conflict),
    )
    finish(response, components, timings)
    await audit.record(
        "enroll",
        collection=recognizer.collection.name,
        identity_id=result.identity.id,
        face_ids=[a.face_id for a in result.accepted],
        status=201,
    )
    return EnrollResponse.of(result)


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    responses={**AUTH, **NOT_FOUND, **IMAGES, **CONFLICT},
    summary="Who is in this photo, or unknown",
)
async def identify(
    _: IdentifyKey,
    recognizer: RecognizerDep,
    components: ComponentsDep,
    response: Response,
    image: Annotated[UploadFile, File(description="The photo to search.")],
    top_k: Annotated[int, Form(ge=1, le=100, description="Candidates per face.")] = 5,
    threshold: Threshold = None,
) -> IdentifyResponse:
    """Every face in the photo, largest first, with its best candidates. A face is a `match` when its best
    candidate's cosine similarity reaches the threshold, otherwise `unknown` (open-set rejection)."""
    data = await read_upload(image, components.settings)
    timings = Timings()
    result = await run_blocking(
        components, lambda: recognizer.identify(data, top_k=top_k, threshold=threshold, timings=timings)
    )
    finish(response, components, timings)
    return IdentifyResponse.of(result, model_public(components), recognizer.collection.name)


@router.post(
    "/verify",
    response_model=VerifyResponse,
    responses={**AUTH, **NOT_FOUND, **IMAGES, **CONFLICT},
    summary="Are these the same person (1:1)",
)
async def verify(
    _: IdentifyKey,
    recognizer: RecognizerDep,
    components: ComponentsDep,
    response: Response,
    image_a: Annotated[UploadFile, File(description="First photo (its largest face is used).")],
    image_b: Annotated[UploadFile | None, File(description="Second photo; or give identity_id.")] = None,
    identity_id: Annotated[
        int | None, Form(ge=1, le=MAX_ID, description="Compare with this enrolled identity.")
    ] = None,
    threshold: Threshold = None,
) -> VerifyResponse:
    """Against an identity, the closest of its faces counts, and the threshold is raised with its number
    of faces so that the false-accept rate stays the single pair's."""
    if (image_b is None) == (identity_id is None):
        raise InvalidInput("give either image_b or identity_id, not both and not neither")
    data_a = await read_upload(image_a, components.settings, "image_a")
    data_b = await read_upload(image_b, components.settings, "image_b") if image_b is not None else None
    timings = Timings()
    result = await run_blocking(
        components,
        lambda: recognizer.verify(data_a, data_b=data_b, identity_id=identity_id, threshold=threshold, timings=timings),
    )
    finish(response, components, timings)
    return VerifyResponse.of(result)


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses={**AUTH, **NOT_FOUND, **IMAGES},
    summary="Faces, landmarks and scores",
)
async def detect(
    _: IdentifyKey,
    recognizer: RecognizerDep,
    components: ComponentsDep,
    response: Response,
    image: Annotated[UploadFile, File(description="The photo.")],
) -> DetectResponse:
    data = await read_upload(image, components.settings)
    timings = Timings()
    faces, found, (width, height) = await run_blocking(components, lambda: recognizer.analyzer.detect(data, timings))
    finish(response, components, timings)
    return DetectResponse(
        faces=[DetectedFace.of(f, q) for f, q in faces],
        faces_detected=found,
        faces_omitted=found - len(faces),
        width=width,
        height=height,
    )
