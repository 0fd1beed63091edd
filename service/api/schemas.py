"""JSON shapes of the API (responses; requests are multipart forms)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from service.recognizer import Decision, EnrollResult, IdentifiedFace, IdentifyResult, VerifyResult
from service.store import FaceRecord, IdentityRecord
from service.store.audit import AuditEntry
from service.vision.detect import Face
from service.vision.quality import FaceQuality

Box = list[float]


def printable(value: str) -> str:
    """Names and keys are text: control characters (NUL, which PostgreSQL cannot store, among them)
    and lone surrogates are refused on every database alike."""
    for ch in value:
        category = unicodedata.category(ch)
        if category == "Cs" or (category == "Cc" and ch not in "\t"):
            raise ValueError(f"must not contain control characters (found U+{ord(ch):04X})")
    return value


Printable = AfterValidator(printable)
# Text fields: the length (and pattern) go before `Printable`, so that a long value is told
# "at most N characters" (after a validator pydantic would count "items").
NameText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S"), Printable]
ExternalIdText = Annotated[str, StringConstraints(min_length=1, max_length=200), Printable]


def _sig(value: float | None) -> float | None:
    """A rate to three significant figures."""
    return None if value is None else float(f"{value:.3g}")


# Ids are 64-bit: anything larger in a path or query is 422, never a database error.
MAX_ID = 2**63 - 1


class ErrorBody(BaseModel):
    code: str = Field(examples=["no_face"])
    message: str = Field(examples=["no face was found in the image"])


class ErrorResponse(BaseModel):
    error: ErrorBody


class IdentityPublic(BaseModel):
    id: int = Field(examples=[42])
    name: str = Field(examples=["Ada Lovelace"])
    external_id: str | None = Field(default=None, examples=["employee-1815"])
    faces: int = Field(description="Number of enrolled faces.", examples=[3])
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: IdentityRecord) -> IdentityPublic:
        return cls(
            id=record.id,
            name=record.name,
            external_id=record.external_id,
            faces=record.faces,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class IdentityList(BaseModel):
    items: list[IdentityPublic]
    total: int = Field(description="Matching identities in all pages.")


class IdentityUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: NameText | None = None
    external_id: ExternalIdText | None = None


class FacePublic(BaseModel):
    id: int
    box: Box = Field(description="x1, y1, x2, y2 in the source image's pixels")
    score: float = Field(description="detector confidence")
    model: str = Field(description="the embedding model that made this face's vector")
    image_sha256: str
    created_at: datetime

    @classmethod
    def of(cls, record: FaceRecord) -> FacePublic:
        return cls(
            id=record.id,
            box=list(record.box),
            score=round(record.score, 4),
            model=record.model,
            image_sha256=record.image_sha256,
            created_at=record.created_at,
        )


class FaceList(BaseModel):
    items: list[FacePublic]


class OcclusionPublic(BaseModel):
    """How covered the eyes and the mouth look, 0 (open) .. 1 (covered): a measured rule on the
    aligned face, not a learned model (`service.vision.occlusion`); 0.5 and above counts as covered."""

    eyes: float = Field(ge=0, le=1, description="sunglasses, an eye patch, a hand over the eyes")
    mouth: float = Field(ge=0, le=1, description="a mask, a scarf, a hand over the mouth")


class QualityPublic(BaseModel):
    """How fit a face is for recognition, in the spirit of Azure Face's qualityForRecognition."""

    sharpness: float = Field(description="variance of the Laplacian over the aligned inner face")
    brightness: float = Field(description="mean grey level of the aligned inner face, 0..1")
    contrast: float = Field(description="standard deviation of its grey levels, 0..1")
    face_size: float = Field(description="distance between the eyes, in pixels")
    yaw: float = Field(description="degrees; positive: the nose points to the image's right")
    pitch: float = Field(description="degrees; positive: the nose points down")
    roll: float = Field(description="degrees; positive: turned clockwise in the image")
    occlusion: OcclusionPublic
    for_recognition: Literal["high", "medium", "low"]
    reasons: list[str] = Field(
        description="the bars a medium or low face missed, e.g. blurry, dark, turned, eyes_covered, mouth_covered, "
        "misaligned (its crop looks turned but it was not found upright: identify answers unknown)"
    )

    @classmethod
    def of(cls, quality: FaceQuality | None) -> QualityPublic | None:
        return None if quality is None else cls(**quality.public())


class AcceptedImage(BaseModel):
    image: int = Field(description="index of the image in the request")
    face_id: int
    box: Box
    score: float
    quality: QualityPublic | None = None


class RejectedImage(BaseModel):
    image: int
    code: str = Field(examples=["ambiguous_faces"])
    message: str


class EnrollResponse(BaseModel):
    identity: IdentityPublic
    accepted: list[AcceptedImage]
    rejected: list[RejectedImage]

    @classmethod
    def of(cls, result: EnrollResult) -> EnrollResponse:
        return cls(
            identity=IdentityPublic.of(result.identity),
            accepted=[
                AcceptedImage(
                    image=a.image,
                    face_id=a.face_id,
                    box=list(a.box),
                    score=a.score,
                    quality=QualityPublic.of(a.quality),
                )
                for a in result.accepted
            ],
            rejected=[RejectedImage(image=r.image, code=r.code, message=r.message) for r in result.rejected],
        )


class CandidatePublic(BaseModel):
    identity: IdentityPublic
    similarity: float = Field(description="cosine similarity of the identity's closest face")


class IdentifiedFacePublic(BaseModel):
    box: Box
    score: float
    landmarks: list[list[float]]
    decision: Literal["match", "unknown"] = Field(
        description="unknown below the face's threshold, and always for a face whose quality reasons say misaligned"
    )
    identity: IdentityPublic | None = Field(description="the match, or null when unknown")
    similarity: float | None = Field(description="the best candidate's cosine, even when the decision is unknown")
    candidates: list[CandidatePublic]
    quality: QualityPublic | None = None
    threshold: float | None = Field(
        default=None,
        description="the threshold this face was held to: the response's, plus a margin for a face of low quality",
    )

    @classmethod
    def of(cls, face: IdentifiedFace) -> IdentifiedFacePublic:
        return cls(
            box=list(face.box),
            score=face.score,
            landmarks=[[round(float(v), 1) for v in p] for p in face.landmarks],
            decision="match" if face.decision == "match" else "unknown",
            identity=IdentityPublic.of(face.identity) if face.identity else None,
            similarity=round(face.similarity, 5) if face.similarity is not None else None,
            candidates=[
                CandidatePublic(identity=IdentityPublic.of(m.identity), similarity=round(m.similarity, 5))
                for m in face.candidates
            ],
            quality=QualityPublic.of(face.quality),
            threshold=round(face.threshold, 5) if face.threshold is not None else None,
        )


class ModelPublic(BaseModel):
    name: str = Field(examples=["sface"])
    version: str = Field(examples=["2021dec-int8bq"])
    embedding_size: int
    provider: str = Field(description="ONNX Runtime execution provider in use", examples=["CPUExecutionProvider"])


class IdentifyResponse(BaseModel):
    faces: list[IdentifiedFacePublic] = Field(description="every face in the image, largest first")
    threshold: float = Field(description="the cosine threshold this decision used")
    threshold_source: str = Field(description="request, fixed (setting), manifest, or gallery (FPIR target)")
    expected_fpir: float | None = Field(
        description="false-positive identification rate expected at this threshold and gallery size, when known"
    )
    fpir_interval: list[float] | None = Field(
        default=None, description="one-sided 95% bounds on expected_fpir, from the impostor pairs it rests on"
    )
    threshold_pairs: dict[str, int] = Field(
        default_factory=dict,
        description="impostor pairs the threshold rests on: the model record's real and synthetic pairs, and with "
        "self-calibration the gallery's own between-identity pairs",
    )
    extrapolated: bool = Field(
        default=False, description="the threshold lies beyond every measured impostor pair: the fitted tail decided"
    )
    gallery_size: int = Field(description="faces in the collection's gallery")
    collection: str = Field(description="the collection searched", examples=["default"])
    faces_detected: int = Field(description="faces found in the image")
    faces_omitted: int = Field(
        description="faces found but not searched: only the largest FACEID_MAX_FACES_PER_IMAGE are"
    )
    model: ModelPublic

    @classmethod
    def of(cls, result: IdentifyResult, model: ModelPublic, collection: str) -> IdentifyResponse:
        decision: Decision = result.decision
        return cls(
            faces=[IdentifiedFacePublic.of(f) for f in result.faces],
            threshold=round(decision.threshold, 5),
            threshold_source=decision.source,
            expected_fpir=_sig(decision.expected_fpir),
            fpir_interval=[float(f"{v:.3g}") for v in decision.fpir_interval] if decision.fpir_interval else None,
            threshold_pairs=decision.pairs,
            extrapolated=decision.extrapolated,
            gallery_size=result.gallery_size,
            collection=collection,
            faces_detected=result.faces_detected,
            faces_omitted=result.faces_detected - len(result.faces),
            model=model,
        )


class VerifyResponse(BaseModel):
    similarity: float
    decision: Literal["match", "no_match"]
    threshold: float
    box_a: Box
    box_b: Box | None

    @classmethod
    def of(cls, result: VerifyResult) -> VerifyResponse:
        return cls(
            similarity=round(result.similarity, 5),
            decision="match" if result.decision == "match" else "no_match",
            threshold=round(result.threshold, 5),
            box_a=list(result.box_a),
            box_b=list(result.box_b) if result.box_b else None,
        )


class DetectedFace(BaseModel):
    box: Box
    score: float
    landmarks: list[list[float]] = Field(description="eyes, nose tip, mouth corners; image-left first")
    quality: QualityPublic | None = None

    @classmethod
    def of(cls, face: Face, quality: FaceQuality | None = None) -> DetectedFace:
        return cls(
            box=[round(float(v), 1) for v in face.box],
            score=round(face.score, 4),
            landmarks=[[round(float(v), 1) for v in p] for p in face.landmarks],
            quality=QualityPublic.of(quality),
        )


class DetectResponse(BaseModel):
    faces: list[DetectedFace] = Field(description="the largest faces, at most FACEID_MAX_FACES_PER_IMAGE")
    faces_detected: int = Field(description="faces found in the image")
    faces_omitted: int = Field(description="faces found but left out of `faces`")
    width: int
    height: int


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: ModelPublic
    detector: str
    database: Literal["ok", "unreachable"]
    database_error: str | None = Field(
        default=None, description="unavailable, query_failed or error; the detail is in the log"
    )
    gallery_size: int = Field(description="faces in this process's galleries, all collections")
    gallery_device: str
    gallery_index: str
    collections: int = Field(description="collections served by this process")
    searchable_faces_in_db: int | None
    faces_of_other_models: dict[str, int]
    in_sync: bool = Field(description="the gallery holds exactly the database's searchable faces")
    gallery_fingerprint: list[int] = Field(description="faces, sum of face ids, sum of identity ids")
    drift_repairs: int = Field(
        default=0, description="times this process found its gallery differing from the database and rebuilt it"
    )
    process: str = Field(description="host:pid of the process that answered (each holds its own gallery)")


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Lower-case letters, digits, '-' and '_'.",
        examples=["front-door"],
    )
    target_fpir: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Share of strangers that may be matched to someone; the threshold follows the collection's "
        "size to keep it. Default: FACEID_TARGET_FPIR.",
    )
    threshold: float | None = Field(
        default=None, ge=-1, le=1, description="A fixed cosine threshold instead of the gallery-aware one."
    )


class ThresholdNow(BaseModel):
    value: float = Field(description="the cosine threshold identify uses at the collection's size now")
    source: str = Field(
        description="collection (fixed for it), fixed (setting), manifest, gallery (FPIR target, the model's "
        "record) or gallery-self (the record pooled with the gallery's own between-identity pairs)"
    )
    expected_fpir: float | None
    fpir_interval: list[float] | None = Field(default=None, description="one-sided 95% bounds on expected_fpir")
    pairs: dict[str, int] = Field(default_factory=dict, description="impostor pairs the threshold rests on")
    extrapolated: bool = False


class CollectionPublic(BaseModel):
    name: str
    model: str = Field(description="the embedding model (name@version) the collection is pinned to")
    target_fpir: float | None
    fixed_threshold: float | None
    identities: int
    faces: int = Field(description="faces in the database")
    gallery_size: int = Field(description="faces searchable by this service")
    threshold: ThresholdNow
    created_at: datetime


class CollectionList(BaseModel):
    items: list[CollectionPublic]


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    action: str
    key_id: int | None
    collection: str | None
    identity_id: int | None
    face_ids: list[int]
    faces: int
    client: str | None
    request_id: str | None
    status: int | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryPublic:
        assert entry.id is not None
        assert entry.at is not None
        return cls(
            id=entry.id,
            at=entry.at,
            action=entry.action,
            key_id=entry.key_id,
            collection=entry.collection,
            identity_id=entry.identity_id,
            face_ids=list(entry.face_ids),
            faces=entry.faces,
            client=entry.client,
            request_id=entry.request_id,
            status=entry.status,
        )


class AuditList(BaseModel):
    items: list[AuditEntryPublic] = Field(description="newest first")
    total: int


class IdentityExport(BaseModel):
    collection: str
    identity: IdentityPublic
    faces: list[FacePublic] = Field(description="metadata only: embeddings are never exported")
    audit: list[AuditEntryPublic] = Field(description="every audit entry about this identity, newest first")
