"""Photo bytes -> faces -> aligned crops: the one path every caller takes.

The service runs it on every request and `faceid-train prepare` runs it on training
photos, so a model sees in training exactly the crops it will see when serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from service.errors import AmbiguousFaces, NoFace
from service.timing import Timings
from service.vision.align import align_face
from service.vision.decode import DEFAULT_MAX_PIXELS, DecodedImage
from service.vision.detect import Detector, Face

# Fewer rows or columns than this, at the scale the detector looks at, cannot hold a face
# (a 3000x2 strip is a valid image); the detector is not asked, as it would scale them to nothing.
MIN_DETECT_SIDE = 8


def enrollment_face(faces: Sequence[Face], ambiguous_ratio: float) -> Face:
    """The labelled person's face: the largest, unless a second is at least `ambiguous_ratio` of its area."""
    if not faces:
        raise NoFace("no face was found in the image")
    ordered = sorted(faces, key=lambda f: f.area, reverse=True)
    if len(ordered) > 1 and ordered[1].area >= ambiguous_ratio * ordered[0].area:
        raise AmbiguousFaces(
            f"the image holds {len(ordered)} faces and the second is {ordered[1].area / ordered[0].area:.0%} "
            "of the largest; use a photo of one person"
        )
    return ordered[0]


class FacePipeline:
    def __init__(self, detector: Detector, *, max_image_pixels: int = DEFAULT_MAX_PIXELS, detect_side: int = 640):
        self.detector = detector
        self.max_image_pixels = max_image_pixels
        self.detect_side = detect_side

    def find(self, data: bytes, timings: Timings | None = None) -> tuple[DecodedImage, list[Face]]:
        """Decode at reduced scale, detect there; faces come back in full-resolution pixels, largest first."""
        timings = timings or Timings()
        with timings.stage("decode"):
            image = DecodedImage(data, self.max_image_pixels, reduced_side=self.detect_side)
        with timings.stage("detect"):
            faces = self.detector.detect(image.reduced) if self._can_hold_a_face(image) else []
        if image.scale != 1.0:
            faces = [replace(f, box=f.box * image.scale, landmarks=f.landmarks * image.scale) for f in faces]
        return image, faces

    def _can_hold_a_face(self, image: DecodedImage) -> bool:
        short, long = sorted(image.reduced.shape[:2])
        return short * min(1.0, self.detect_side / long) >= MIN_DETECT_SIDE

    def crops(
        self,
        image_faces: Sequence[tuple[DecodedImage, Face]],
        size: tuple[int, int],
        timings: Timings | None = None,
    ) -> list[NDArray[np.uint8]]:
        """Aligned crops of (width, height) `size`.

        A face whose box in the reduced image is at least the crop's size is aligned
        from the reduced pixels: the crop then only ever downsamples them, and DCT
        scaling is a filtered downscale (warping straight from far larger pixels would
        alias). Smaller faces are aligned from full resolution, decoded once per image.
        """
        timings = timings or Timings()
        reduced = []
        for image, face in image_faces:
            side = min(face.box[2] - face.box[0], face.box[3] - face.box[1]) / image.scale
            reduced.append(image.scale == 1.0 or side >= max(size))
        if not all(reduced):
            with timings.stage("decode"):
                for (image, _), use_reduced in zip(image_faces, reduced, strict=True):
                    if not use_reduced:
                        image.full()
        with timings.stage("align"):
            return [
                align_face(image.reduced, face.landmarks / image.scale, size)
                if use_reduced
                else align_face(image.full(), face.landmarks, size)
                for (image, face), use_reduced in zip(image_faces, reduced, strict=True)
            ]
