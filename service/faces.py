"""Photo bytes -> faces with embeddings: detection, alignment and the embedder, shared by every collection.

No database and no gallery here: `service.recognizer` decides what the faces mean.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.errors import FaceIdError, ImageTooSmall, InvalidInput, LowQuality, NoFace
from service.store import NewFace
from service.timing import Timings
from service.vision.decode import DecodedImage
from service.vision.detect import Detector, Face
from service.vision.embed import Embedder
from service.vision.pipeline import FacePipeline, enrollment_face
from service.vision.quality import FaceQuality, assess
from service.vision.templates import TemplateBuilder

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class AnalysedFace:
    box: Box
    landmarks: NDArray[np.float32]
    score: float
    embedding: NDArray[np.float32]
    quality: FaceQuality | None = None


@dataclass(frozen=True)
class Rejection:
    image: int
    code: str
    message: str


def box_of(face: Face) -> Box:
    x1, y1, x2, y2 = (round(float(v), 1) for v in face.box)
    return (x1, y1, x2, y2)


class FaceAnalyzer:
    def __init__(
        self,
        *,
        detector: Detector,
        embedder: Embedder,
        max_image_pixels: int,
        ambiguous_ratio: float = 0.5,
        detect_side: int = 640,
        max_faces: int = 32,
        min_face: int = 1,
        quality_gate: bool = True,
        augment_templates: bool = True,
    ) -> None:
        self.detector = detector
        self.min_face = min_face
        self.embedder = embedder
        self.ambiguous_ratio = ambiguous_ratio
        self.max_faces = max_faces
        self.quality_gate = quality_gate  # enrollment refuses faces that are `low` for recognition
        self.templates = TemplateBuilder(embedder, augment=augment_templates)
        self.pipeline = FacePipeline(detector, max_image_pixels=max_image_pixels, detect_side=detect_side)
        self.model_id = embedder.manifest.model_id

    def _faces(self, data: bytes, timings: Timings) -> tuple[DecodedImage, list[Face]]:
        image, faces = self.pipeline.find(data, timings)
        width, height = image.size
        if min(width, height) < self.min_face:  # no face the detector keeps could fit
            raise ImageTooSmall(
                f"the image is {width}x{height} pixels; a face needs at least {self.min_face} on each side"
            )
        return image, faces

    def _embed(
        self, image_faces: Sequence[tuple[DecodedImage, Face]], timings: Timings
    ) -> tuple[NDArray[np.float32], list[FaceQuality]]:
        """Embeddings and quality of faces, from the one aligned crop each (quality costs no extra warp)."""
        crops = self.pipeline.crops(image_faces, self.embedder.manifest.preprocess.size, timings)
        with timings.stage("embed"):
            embeddings = self.embedder.embed(crops)
        with timings.stage("quality"):
            qualities = [assess(face, crop) for (_, face), crop in zip(image_faces, crops, strict=True)]
        return embeddings, qualities

    def analyse(self, data: bytes, timings: Timings | None = None) -> tuple[list[AnalysedFace], int]:
        """The image's faces, largest first, at most `max_faces` of them, each with its embedding (one
        batch) and quality; and how many faces were found in all."""
        timings = timings or Timings()
        image, found = self._faces(data, timings)
        faces = found[: self.max_faces]
        embeddings, qualities = self._embed([(image, f) for f in faces], timings)
        analysed = [
            AnalysedFace(box_of(f), f.landmarks, f.score, e, q)
            for f, e, q in zip(faces, embeddings, qualities, strict=True)
        ]
        return analysed, len(found)

    def detect(
        self, data: bytes, timings: Timings | None = None
    ) -> tuple[list[tuple[Face, FaceQuality]], int, tuple[int, int]]:
        """The largest `max_faces` faces with their quality, largest first; how many were found; the
        image's (width, height)."""
        timings = timings or Timings()
        image, found = self._faces(data, timings)
        faces = found[: self.max_faces]
        crops = self.pipeline.crops([(image, f) for f in faces], self.embedder.manifest.preprocess.size, timings)
        with timings.stage("quality"):
            qualities = [assess(f, c) for f, c in zip(faces, crops, strict=True)]
        return list(zip(faces, qualities, strict=True)), len(found), image.size

    def _enrollment_crops(
        self, images: Sequence[bytes], timings: Timings
    ) -> tuple[list[tuple[int, Face, str, FaceQuality]], list[NDArray[np.uint8]], list[Rejection], list[FaceIdError]]:
        """Per image, the labelled face, its quality and its aligned crop. Images are handled one at a
        time and only the crop is kept, so a request holds one decoded image at a time, whatever its count."""
        chosen: list[tuple[int, Face, str, FaceQuality]] = []
        crops: list[NDArray[np.uint8]] = []
        rejected: list[Rejection] = []
        errors: list[FaceIdError] = []
        size = self.embedder.manifest.preprocess.size
        for index, data in enumerate(images):
            try:
                image, faces = self._faces(data, timings)
                largest = enrollment_face(faces, self.ambiguous_ratio)
                crop = self.pipeline.crops([(image, largest)], size, timings)[0]
                quality = assess(largest, crop)
                if self.quality_gate and quality.for_recognition == "low":
                    raise LowQuality(
                        "the face is too poor to recognise reliably ("
                        + ", ".join(quality.reasons)
                        + "); use a sharper, brighter, frontal photo"
                    )
                crops.append(crop)
                chosen.append((index, largest, hashlib.sha256(data).hexdigest(), quality))
            except FaceIdError as exc:
                errors.append(exc)
                rejected.append(Rejection(index, exc.code, exc.message))
            image = None  # type: ignore[assignment]  # the decoded pixels go before the next image
        return chosen, crops, rejected, errors

    def new_faces(
        self, images: Sequence[bytes], timings: Timings | None = None
    ) -> tuple[list[tuple[int, Face, FaceQuality]], list[NewFace], list[Rejection], NDArray[np.float32]]:
        """Faces to store for one person's images (index, face and quality of each; each stored as its
        enrollment template, `service.vision.templates`), the images rejected (with the reason), and
        each stored face's plain embedding, as it would be searched for as a probe. Raises when no
        image gives a face."""
        timings = timings or Timings()
        if not images:
            raise InvalidInput("at least one image is required")
        chosen, crops, rejected, errors = self._enrollment_crops(images, timings)
        if not chosen:
            if len(errors) == 1:
                raise errors[0]
            raise NoFace("no image gave a usable face: " + "; ".join(f"image {r.image}: {r.code}" for r in rejected))
        with timings.stage("embed"):
            plain, templates = self.templates.build(crops)
        new = [
            NewFace(embedding=t, model=self.model_id, box=box_of(face), score=face.score, image_sha256=sha)
            for (_, face, sha, _), t in zip(chosen, templates, strict=True)
        ]
        return [(i, f, q) for i, f, _, q in chosen], new, rejected, plain

    def largest(self, data: bytes, timings: Timings, label: str) -> AnalysedFace:
        image, faces = self._faces(data, timings)
        if not faces:
            raise NoFace(f"no face was found in {label}")
        embeddings, qualities = self._embed([(image, faces[0])], timings)
        return AnalysedFace(box_of(faces[0]), faces[0].landmarks, faces[0].score, embeddings[0], qualities[0])
