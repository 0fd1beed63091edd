"""Hard faces: open-set identification under degradations, and false detections on face-free images.

    python -m bench.robustness [--distractors 1000] [--systems yunet,retinaface,cascade_plain,cascade,peer] [--publish]

Protocol. Enrolled, one clean photo each: ORL s1..s10 (photo 1) and Obama
(`tests/fixtures/photos/obama.jpg`). Mated probes: ORL s1..s10 photos 2..10 and
`obama2.jpg`. Non-mated probes (never enrolled): every photo of ORL s11..s20, and
every other face of the fixtures' photos (Biden, Tom Hanks, the group photos).
ORL s21..s40 are never used. An ORL photo is a tight 92x112 crop, so it is set on a
plain background twice its size; a face from a fixture photo is cut out with
context, scaled so the face is about 100 px wide. The gallery also holds 1,000
synthetic DCGAN faces (each its own identity), detected and aligned by each
system's own detector. For SFace the gallery stores what the service stores: each face's
enrollment template (`service.vision.templates`, the mean over its crop and five degraded
views); `cascade_plain` is the default cascade with plain templates (FACEID_ENROLL_TEMPLATES=false).

Each probe is degraded once per condition, with a strength drawn at random (seeded)
over the condition's range, so every condition mixes mild and severe cases:
clean; sunglasses (dark lenses drawn over the eye landmarks); mask (the lower face
covered from under the nose); dark (exposure x0.08..0.35 and sensor noise);
backlit (bright background, face x0.2..0.5); low resolution (face 12..32 px wide,
scaled back up); JPEG quality 4..20; blur (Gaussian or motion); in-plane rotation
10..30 degrees either way; head turned (a perspective warp, 15..45 degrees of yaw).

Per condition and system: detection recall (a detected box holds the face's
centre and is of its size), rank-1, FNIR at FPIR 1% (threshold from that
condition's non-mated searches), and DIR and FPIR at the default decision: for
SFace the service's decision: the gallery-aware threshold for this gallery size and
FACEID_TARGET_FPIR 1%, plus the margin for the face's quality level, and no match on a
misaligned face (`at_threshold`: the threshold alone); the peer has no calibrated decision, so it gets the threshold
that holds FPIR 1% on its own clean non-mated searches (an oracle in its favour).
A face that is not found counts as a miss for a mated search and as a correct
rejection for a non-mated one. Face-free images (background
regions of the fixture photos with no face, and generated textures, each also
under a random photometric degradation) count false detections.

Writes bench/out/robustness.json and robustness.png; the per-probe table (scores,
detection, strength) goes to bench/out/robustness_probes.npz for the quality study.

`--conditions clean,quarter_turn` measures photos turned by quarter turns (an uploader that
strips the EXIF orientation), outside the ten: robustness_quarter_turn.json.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from bench.accuracy import distractor_crops, embed_batches
from bench.common import FACE_640, ORL, OUT, REPO, machine, report_written, shared_asset, time_call, write_json
from service.vision.align import align_face
from service.vision.cascade import CascadeDetector
from service.vision.decode import decode_image
from service.vision.detect import Detector, DetectorOptions, Face, YuNetDetector
from service.vision.detectors import build_detector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_detector_model, load_embedder_model, load_retinaface_model
from service.vision.occlusion import Occlusion
from service.vision.quality import THRESHOLD_MARGIN, assess_image
from service.vision.quality import level as quality_level
from service.vision.retinaface import RetinaFaceDetector
from service.vision.templates import TemplateBuilder
from service.vision.upright import UprightDetector
from training.metrics import SearchResults, search, search_metrics, threshold_at_rate

PHOTOS = REPO / "tests" / "fixtures" / "photos"
ENROLLED = range(1, 11)
NEVER_ENROLLED = range(11, 21)
CONDITIONS = (
    "clean",
    "sunglasses",
    "mask",
    "dark",
    "backlit",
    "low_resolution",
    "jpeg",
    "blur",
    "rotation",
    "head_turn",
)
# Measured on request (`--conditions quarter_turn`), reported in a file of their own, and kept
# out of the pooled figures and the quality calibration, which are the issue's ten conditions'.
EXTRA_CONDITIONS = ("quarter_turn",)
PHOTOMETRIC = ("dark", "backlit", "low_resolution", "jpeg", "blur")
FIXTURE_FACE_WIDTH = 100
TARGET_FPIR = 0.01
CASCADE_SURE, CASCADE_UNSURE = 0.5, 0.3
MBF_SYSTEMS = ("peer", "cascade_mbf")
PEER_THRESHOLD = 0.307  # bench.accuracy: MBF at SFace's ORL 1:1 false-accept rate at 0.40


class Embedder(Protocol):
    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]: ...


@dataclass
class Subject:
    """A face photo with its reference landmarks (image-left eye first) and who it is."""

    image: NDArray[np.uint8]  # (H, W, 3) RGB
    landmarks: NDArray[np.float32]  # (5, 2)
    box: NDArray[np.float32]  # (4,) reference face box
    label: str
    source: str


@dataclass
class Probe:
    image: NDArray[np.uint8]
    center: NDArray[np.float32]  # where the face is, after any geometric change
    width: float  # the face box's width there
    strength: float  # 0 mild .. 1 severe, within the condition's range
    landmarks: NDArray[np.float32]  # the reference landmarks, moved with the image


@dataclass
class System:
    name: str
    detector: Detector
    embedder: Embedder
    threshold: Callable[[int], float] = field(default=lambda n: 0.0)
    templates: bool = False  # the gallery stores enrollment templates (service.vision.templates), as the service does

    def gallery_vectors(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        """What the gallery stores for these aligned enrollment crops (N, 112, 112, 3)."""
        if not self.templates:
            return embed_batches(self.embedder, crops)
        builder = TemplateBuilder(cast(Any, self.embedder))
        return np.concatenate([builder.build(list(crops[i : i + 64]))[1] for i in range(0, len(crops), 64)])


def rng_for(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# --- the people ------------------------------------------------------------------------


def on_background(face: NDArray[np.uint8], rng: np.random.Generator) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """A tight crop set in the middle of a plain, softly shaded background twice its size; (image, offset)."""
    h, w = face.shape[:2]
    tall, wide = 2 * h, 2 * w
    tone = rng.uniform(70, 190)
    ramp = np.linspace(-25, 25, wide)[None, :] * rng.choice([-1, 1]) + np.linspace(-15, 15, tall)[:, None]
    canvas = np.clip(tone + ramp + rng.normal(0, 2, (tall, wide)), 0, 255)
    out = np.repeat(canvas[:, :, None], 3, axis=2).astype(np.uint8)
    y0, x0 = (tall - h) // 2, (wide - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = face
    return out, np.array([x0, y0])


def reference_face(detectors: Sequence[Detector], image: NDArray[np.uint8]) -> Face | None:
    for detector in detectors:
        faces = detector.detect(image)
        if faces:
            return faces[0]
    return None


def orl_subject(person: int, photo: int, detectors: Sequence[Detector]) -> Subject:
    face = decode_image((ORL / f"s{person}" / f"{photo}.pgm").read_bytes())
    image, _ = on_background(face, rng_for("orl", person, photo))
    found = reference_face(detectors, image)
    if found is None:
        raise RuntimeError(f"no reference face in ORL s{person}/{photo}")
    return Subject(image, found.landmarks, found.box, f"orl_s{person}", f"orl/s{person}/{photo}.pgm")


def fixture_subjects(name: str, label: str | None, detectors: Sequence[Detector]) -> list[Subject]:
    """Every face of a fixture photo, cut out with context and scaled to a face about 100 px wide."""
    image = decode_image((PHOTOS / name).read_bytes())
    if max(image.shape[:2]) <= 160:  # an aligned crop: treat like ORL
        image, _ = on_background(image, rng_for("fixture", name))
    faces = detectors[0].detect(image)
    out = []
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = face.box
        side = max(x2 - x1, y2 - y1)
        scale = FIXTURE_FACE_WIDTH / max(x2 - x1, 1.0)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = side * 1.1
        matrix = np.array([[scale, 0, (half - cx) * scale], [0, scale, (half - cy) * scale]], np.float64)
        size = round(2 * half * scale)
        crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        points = (face.landmarks - [cx - half, cy - half]) * scale
        box = (face.box - np.tile([cx - half, cy - half], 2)) * scale
        who = label if label is not None and i == 0 else f"{name}#{i}"
        out.append(Subject(np.asarray(crop, np.uint8), points.astype(np.float32), box.astype(np.float32), who, name))
    return out


def people(detectors: Sequence[Detector]) -> tuple[list[Subject], list[Subject], list[Subject]]:
    """(enrolled, mated probes, non-mated probes)."""
    enrolled = [orl_subject(p, 1, detectors) for p in ENROLLED]
    enrolled += fixture_subjects("obama.jpg", "obama", detectors)[:1]
    mated = [orl_subject(p, n, detectors) for p in ENROLLED for n in range(2, 11)]
    mated += fixture_subjects("obama2.jpg", "obama", detectors)[:1]
    strangers = [orl_subject(p, n, detectors) for p in NEVER_ENROLLED for n in range(1, 11)]
    for name in ("biden.jpg", "Tom_Hanks_54745.png", "t1.jpg", "sample1.jpg", "sample2.jpg", "sample3.jpg"):
        strangers += fixture_subjects(name, None, detectors)
    return enrolled, mated, strangers


# --- degradations ----------------------------------------------------------------------


def _moved(subject: Subject, image: NDArray[np.uint8], matrix: NDArray[np.float64], strength: float) -> Probe:
    """A probe after the 3x3 `matrix` moved the image: the face's centre and width follow."""
    points = cv2.perspectiveTransform(subject.landmarks.reshape(-1, 1, 2).astype(np.float64), matrix).reshape(5, 2)
    corners = subject.box.reshape(2, 2).astype(np.float64)
    center = cv2.perspectiveTransform(corners.mean(axis=0).reshape(1, 1, 2), matrix).reshape(2)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    width = float(subject.box[2] - subject.box[0]) * scale
    return Probe(image, center.astype(np.float32), width, strength, points.astype(np.float32))


def _same_place(subject: Subject, image: NDArray[np.uint8], strength: float) -> Probe:
    return _moved(subject, image, np.eye(3), strength)


def sunglasses(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    image = subject.image.copy()
    left, right = subject.landmarks[0], subject.landmarks[1]
    iod = float(np.linalg.norm(right - left))
    angle = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
    axes = (max(2, round(iod * (0.40 + 0.12 * s))), max(2, round(iod * (0.28 + 0.10 * s))))  # lenses all but touch
    tint = rng.uniform(0, 40, 3)
    lenses = np.zeros(image.shape[:2], np.uint8)
    for eye in (left, right):
        cv2.ellipse(lenses, (round(eye[0]), round(eye[1])), axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
    cv2.line(
        lenses,
        (round(left[0]), round(left[1] - axes[1] * 0.4)),
        (round(right[0]), round(right[1] - axes[1] * 0.4)),
        255,
        max(1, round(iod * 0.06)),
        cv2.LINE_AA,
    )
    opacity = (lenses.astype(np.float32) / 255.0 * (0.85 + 0.15 * s))[:, :, None]
    out = image * (1 - opacity) + tint * opacity
    return _same_place(subject, np.clip(out, 0, 255).astype(np.uint8), s)


def mask(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    image = subject.image.copy()
    eyes, nose, mouth = subject.landmarks[:2], subject.landmarks[2], subject.landmarks[3:]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    down = mouth.mean(axis=0) - eyes.mean(axis=0)
    down = down / max(float(np.linalg.norm(down)), 1e-6)
    across = np.array([down[1], -down[0]])
    if across[0] < 0:
        across = -across
    top = nose + down * iod * (0.25 - 0.2 * s)  # a stronger mask reaches higher up the nose
    bottom = mouth.mean(axis=0) + down * iod * 1.1
    half = iod * 1.2
    polygon = np.array(
        [
            top - across * half * 0.9,
            top + across * half * 0.9,
            bottom + across * half * 0.7,
            bottom - across * half * 0.7,
        ]
    )
    colour = [int(c) for c in rng.choice([[235, 240, 245], [140, 190, 230], [30, 30, 35], [200, 200, 200]])]
    cv2.fillPoly(image, [np.round(polygon).astype(np.int32)], colour, cv2.LINE_AA)
    return _same_place(subject, image, s)


def dark(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    gain = 0.35 - 0.27 * s
    noisy = subject.image.astype(np.float32) * gain + rng.normal(0, 1.5 + 5 * s, subject.image.shape)
    return _same_place(subject, np.clip(noisy, 0, 255).astype(np.uint8), s)


def backlit(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    h, w = subject.image.shape[:2]
    x1, y1, x2, y2 = subject.box
    mask_ = np.zeros((h, w), np.float32)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    cv2.ellipse(mask_, (round(cx), round(cy)), (round((x2 - x1) * 0.6), round((y2 - y1) * 0.75)), 0, 0, 360, 1.0, -1)
    weight = np.asarray(cv2.GaussianBlur(mask_, (0, 0), max(1.0, (x2 - x1) * 0.15)), np.float32)[:, :, None]
    face = subject.image.astype(np.float32) * (0.5 - 0.3 * s)
    light = 200 + 55 * s
    background = subject.image.astype(np.float32) * 0.3 + light * 0.7
    out = face * weight + background * (1 - weight) + rng.normal(0, 2, subject.image.shape)
    return _same_place(subject, np.clip(out, 0, 255).astype(np.uint8), s)


def low_resolution(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    h, w = subject.image.shape[:2]
    target = 32 - 20 * s  # face width in pixels
    f = min(1.0, target / max(float(subject.box[2] - subject.box[0]), 1.0))
    small = cv2.resize(subject.image, (max(2, round(w * f)), max(2, round(h * f))), interpolation=cv2.INTER_AREA)
    back = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return _same_place(subject, np.asarray(back, np.uint8), s)


def jpeg(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    quality = round(20 - 16 * s)
    ok, data = cv2.imencode(".jpg", subject.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    decoded: NDArray[np.uint8] = np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)
    return _same_place(subject, np.ascontiguousarray(decoded[:, :, ::-1]), s)


def blur(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    width = float(subject.box[2] - subject.box[0])
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(subject.image, (0, 0), width * (0.015 + 0.035 * s))
    else:
        length = max(3, round(width * (0.06 + 0.14 * s)))
        line = np.zeros((length, length), np.float32)
        line[length // 2, :] = 1.0 / length
        centre = (length / 2 - 0.5, length / 2 - 0.5)
        turn = cv2.getRotationMatrix2D(centre, rng.uniform(0, 180), 1.0)
        kernel = np.asarray(cv2.warpAffine(line, turn, (length, length)), np.float32)
        out = cv2.filter2D(subject.image, -1, kernel / max(float(kernel.sum()), 1e-6))
    return _same_place(subject, np.asarray(out, np.uint8), s)


def rotation(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    angle = (10 + 20 * s) * rng.choice([-1, 1])
    h, w = subject.image.shape[:2]
    centre = (float(subject.box[0] + subject.box[2]) / 2, float(subject.box[1] + subject.box[3]) / 2)
    matrix = np.vstack([cv2.getRotationMatrix2D(centre, angle, 1.0), [0, 0, 1]])
    out = cv2.warpAffine(subject.image, matrix[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _moved(subject, np.asarray(out, np.uint8), matrix, s)


def head_turn(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    """A yaw of 15..45 degrees, approximated by a perspective warp of the face plane."""
    yaw = np.radians(15 + 30 * s) * rng.choice([-1, 1])
    h, w = subject.image.shape[:2]
    x1, y1, x2, y2 = subject.box
    cx = (x1 + x2) / 2
    half = (x2 - x1) / 2
    near = 1 + 0.35 * abs(np.sin(yaw))  # the side turned towards the camera looks taller
    squeeze = np.cos(yaw)
    src = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)
    top, bottom = float(y1), float(y2)
    mid = (top + bottom) / 2
    tall, short = (bottom - top) / 2 * near, (bottom - top) / 2 / near
    left_h, right_h = (tall, short) if yaw > 0 else (short, tall)
    nx1, nx2 = cx - half * squeeze, cx + half * squeeze
    dst = np.array(
        [[nx1, mid - left_h], [nx2, mid - right_h], [nx2, mid + right_h], [nx1, mid + left_h]],
        np.float32,
    )
    matrix = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(subject.image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    probe = _moved(subject, np.asarray(out, np.uint8), matrix.astype(np.float64), s)
    probe.width = float(x2 - x1) * float(squeeze)
    return probe


def quarter_turn(subject: Subject, rng: np.random.Generator, s: float) -> Probe:
    """The photo a quarter, half or three-quarter turn round, as when an uploader strips the EXIF
    orientation. Outside the issue's ten conditions and never pooled with them (`EXTRA_CONDITIONS`)."""
    turns = int(rng.integers(1, 4))
    matrix = np.eye(3)
    height, width = subject.image.shape[:2]
    for _ in range(turns):  # np.rot90 once: (x, y) -> (y, W - 1 - x)
        matrix = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, width - 1.0], [0.0, 0.0, 1.0]]) @ matrix
        height, width = width, height
    out = np.ascontiguousarray(np.rot90(subject.image, turns))
    return _moved(subject, out, matrix, turns / 3)


DEGRADE: dict[str, Callable[[Subject, np.random.Generator, float], Probe]] = {
    "clean": lambda subject, rng, s: _same_place(subject, subject.image, 0.0),
    "sunglasses": sunglasses,
    "mask": mask,
    "dark": dark,
    "backlit": backlit,
    "low_resolution": low_resolution,
    "jpeg": jpeg,
    "blur": blur,
    "rotation": rotation,
    "head_turn": head_turn,
    "quarter_turn": quarter_turn,
}


def degrade(subject: Subject, condition: str, key: object) -> Probe:
    rng = rng_for(condition, key)
    return DEGRADE[condition](subject, rng, float(rng.uniform(0, 1)))


# --- face-free images ------------------------------------------------------------------


def face_free(count: int, detectors: Sequence[Detector], seed: int = 0) -> list[NDArray[np.uint8]]:
    """Half background regions of the fixture photos away from every face any detector finds,
    half generated textures; each under a random photometric degradation or none."""
    rng = np.random.default_rng(seed)
    images: list[NDArray[np.uint8]] = []
    photos = [decode_image((PHOTOS / n).read_bytes()) for n in ("t1.jpg", "sample1.jpg", "sample2.jpg", "sample3.jpg")]
    boxes = []
    for photo in photos:
        found = [f.box for d in detectors for f in d.detect(photo)]
        boxes.append(found)
    tries = 0
    while len(images) < count // 2 and tries < 10000:
        tries += 1
        k = int(rng.integers(len(photos)))
        photo = photos[k]
        h, w = photo.shape[:2]
        side = int(rng.integers(96, min(h, w) // 2))
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        if any(_overlaps((x, y, x + side, y + side), b, margin=0.5) for b in boxes[k]):
            continue
        crop = photo[y : y + side, x : x + side]
        images.append(np.asarray(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA), np.uint8))
    while len(images) < count:
        images.append(texture(rng))
    kinds = ("clean", "dark", "low_resolution", "jpeg", "blur")
    whole = np.array([64, 64, 192, 192], np.float32)  # what the degradations scale by
    return [
        degrade(
            Subject(image, np.zeros((5, 2), np.float32), whole, "none", ""), kinds[i % len(kinds)], ("free", i)
        ).image
        for i, image in enumerate(images)
    ]


def _overlaps(a: tuple[int, int, int, int], b: NDArray[np.float32], margin: float) -> bool:
    bx1, by1, bx2, by2 = (float(v) for v in b)
    mx, my = (bx2 - bx1) * margin, (by2 - by1) * margin
    return not (a[2] < bx1 - mx or a[0] > bx2 + mx or a[3] < by1 - my or a[1] > by2 + my)


def texture(rng: np.random.Generator, size: int = 256) -> NDArray[np.uint8]:
    kind = int(rng.integers(5))
    if kind == 0:  # smooth noise
        base = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), rng.uniform(2, 12))
        base = (base - base.min()) / max(float(np.ptp(base)), 1e-6) * 255
    elif kind == 1:  # stripes
        yy, xx = np.mgrid[:size, :size]
        theta = rng.uniform(0, np.pi)
        wave = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) / rng.uniform(3, 20))
        base = np.repeat(((wave + 1) * 127.5)[:, :, None], 3, axis=2)
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(8, 48))
        yy, xx = np.mgrid[:size, :size]
        base = np.repeat(((((xx // cell) + (yy // cell)) % 2) * 200 + 30)[:, :, None], 3, axis=2).astype(np.float32)
    elif kind == 3:  # blobs and ellipses
        base = np.full((size, size, 3), rng.uniform(0, 255, 3), np.float32)
        for _ in range(int(rng.integers(3, 12))):
            centre = (int(rng.integers(size)), int(rng.integers(size)))
            axes = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
            colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
            cv2.ellipse(base, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    else:  # a gradient with noise
        ramp = np.linspace(0, 1, size)
        base = np.stack([ramp[None, :] * rng.uniform(50, 255) + ramp[:, None] * rng.uniform(0, 100)] * 3, axis=2)
        base = base + rng.normal(0, 8, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


# --- running a system ------------------------------------------------------------------


@dataclass
class Found:
    embedding: NDArray[np.float32] | None
    face: Face | None


def find(detector: Detector, probe: Probe) -> Face | None:
    """The detected face at the probe's face: its box holds the centre and has about its width."""
    best = None
    for face in detector.detect(probe.image):
        x1, y1, x2, y2 = face.box
        cx, cy = probe.center
        at_face = x1 <= cx <= x2 and y1 <= cy <= y2 and 0.4 <= (x2 - x1) / max(probe.width, 1.0) <= 2.5
        if at_face and (best is None or face.score > best.score):
            best = face
    return best


def run_probes(
    system: System, probes: list[Probe], *, enroll: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.bool_], list[Face | None]]:
    """(embeddings (N, D), found (N,), faces): rows of unfound faces are zero. With `enroll`, the
    vectors are what the system's gallery stores for the faces (its templates)."""
    faces = [find(system.detector, p) for p in probes]
    crops = [align_face(p.image, f.landmarks) for p, f in zip(probes, faces, strict=True) if f is not None]
    found = np.array([f is not None for f in faces])
    embed = system.gallery_vectors if enroll else (lambda c: embed_batches(system.embedder, c))
    vectors = embed(np.stack(crops)) if crops else np.zeros((0, 1), np.float32)
    dim = vectors.shape[1]
    out = np.zeros((len(probes), dim), np.float32)
    out[found] = vectors
    return out, found, faces


QUALITY_FIELDS = ("sharpness", "brightness", "contrast", "face_size", "yaw", "pitch", "roll")
OCCLUSION_FIELDS = ("eyes", "mouth")  # service.vision.occlusion scores, after QUALITY_FIELDS
# then 1.0 where the face is misaligned (service.vision.upright), else 0.0
MEASURES = len(QUALITY_FIELDS) + len(OCCLUSION_FIELDS) + 1


def measure_quality(probes: list[Probe], faces: list[Face | None]) -> NDArray[np.float64]:
    """(N, MEASURES) `service.vision.quality` measures of each found face; NaN where none."""
    out = np.full((len(probes), MEASURES), np.nan)
    for i, (probe, face) in enumerate(zip(probes, faces, strict=True)):
        if face is not None:
            q = assess_image(probe.image, face)
            out[i] = (
                [getattr(q, f) for f in QUALITY_FIELDS]
                + [getattr(q.occlusion, f) for f in OCCLUSION_FIELDS]
                + [float(face.misaligned)]
            )
    return out


def covered_of(row: NDArray[np.float64]) -> tuple[str, ...]:
    """The regions a row of `measure_quality` found covered."""
    eyes, mouth = row[len(QUALITY_FIELDS) : len(QUALITY_FIELDS) + len(OCCLUSION_FIELDS)]
    return Occlusion(float(eyes), float(mouth)).covered


def misaligned_of(measured: NDArray[np.float64]) -> NDArray[np.bool_]:
    """(N,) whether each face of `measure_quality` rows is misaligned (False where none was found)."""
    return np.nan_to_num(measured[:, -1]) > 0.5


def cached_distractors(system: System, count: int, weights: Path, cache: Path) -> NDArray[np.float32]:
    if cache.exists():
        with np.load(cache) as stored:
            if len(stored["embeddings"]) >= count:
                return np.asarray(stored["embeddings"][:count], np.float32)
    crops = distractor_crops(count, cast(Any, system.detector), weights)
    vectors = system.gallery_vectors(crops)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, embeddings=vectors)
    return vectors


def searched(
    gallery: NDArray[np.float32],
    gallery_labels: NDArray[Any],
    probes: NDArray[np.float32],
    labels: NDArray[Any],
    found: NDArray[np.bool_],
    distractors: NDArray[np.float32],
) -> SearchResults:
    """The search, with unfound faces scored -inf: missed if mated, correctly rejected if not."""
    results = search(gallery, gallery_labels, probes, labels, distractors=distractors)
    score = np.where(found, results.top1_score, -np.inf)
    return SearchResults(score, results.top1_correct & found, results.mated, results.gallery_identities)


def at_threshold(
    results: SearchResults, threshold: float, accepted: NDArray[np.bool_] | None = None
) -> dict[str, float]:
    """DIR and FPIR where a search is accepted at `threshold`, or where `accepted` says."""
    accept = results.top1_score >= threshold if accepted is None else accepted
    mated = results.mated
    dir_ = np.mean(results.top1_correct[mated] & accept[mated])
    fpir = np.mean(accept[~mated])
    return {"threshold": round(threshold, 4), "dir": round(float(dir_), 4), "fpir": round(float(fpir), 4)}


def service_accepts(results: SearchResults, measured: NDArray[np.float64], threshold: float) -> NDArray[np.bool_]:
    """Which searches the service's decision accepts: at the threshold plus the margin of the
    face's quality level (`THRESHOLD_MARGIN`), never on a misaligned face."""
    margins = {"none": 0.0, **THRESHOLD_MARGIN}
    margin = np.array([margins[v] for v in levels_of(measured)])
    return (results.top1_score >= threshold + margin) & ~misaligned_of(measured)


def metrics_of(results: SearchResults, threshold: float, accepted: NDArray[np.bool_] | None = None) -> dict[str, Any]:
    """`at_default`: the default decision (`accepted`, or at `threshold`); `at_threshold`: at the
    threshold alone, where the decision is more than that."""
    m = search_metrics(results, fpirs=(TARGET_FPIR,))
    key = next(iter(m["fnir_at_fpir"]))
    out = {
        "rank1": round(m["rank1"], 4),
        "fnir_at_fpir_1pct": None if m["fnir_at_fpir"][key] is None else round(m["fnir_at_fpir"][key], 4),
        "at_default": at_threshold(results, threshold, accepted),
        "mated": m["mated_searches"],
        "non_mated": m["non_mated_searches"],
    }
    if accepted is not None:
        out["at_threshold"] = at_threshold(results, threshold)
    return out


# --- systems ---------------------------------------------------------------------------


def build_systems(names: Sequence[str]) -> dict[str, System]:
    from service.threshold import GalleryAwareThreshold

    manifest, model = load_embedder_model("builtin:sface")
    sface = OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"])
    assert manifest.impostors is not None
    policy = GalleryAwareThreshold(manifest.impostors, TARGET_FPIR, manifest.threshold.cosine)

    def sface_threshold(n: int) -> float:
        return policy.choose(n).value

    systems: dict[str, System] = {}
    if "yunet" in names:
        systems["yunet"] = System("YuNet + SFace", YuNetDetector(load_detector_model()), sface, sface_threshold, True)
    if "retinaface" in names:
        systems["retinaface"] = System(
            "RetinaFace + SFace", RetinaFaceDetector(load_retinaface_model()), sface, sface_threshold, True
        )
    if {"cascade", "cascade_plain"} & set(names):
        first = RetinaFaceDetector(load_retinaface_model(), DetectorOptions(score_threshold=CASCADE_UNSURE))
        cascade = UprightDetector(  # as the service builds it (service.vision.detectors)
            CascadeDetector(first, YuNetDetector(load_detector_model()), sure=CASCADE_SURE, unsure=CASCADE_UNSURE),
            RetinaFaceDetector(load_retinaface_model()),
        )
        if "cascade_plain" in names:  # FACEID_ENROLL_TEMPLATES=false: the service before enrollment templates
            name = "RetinaFace (+YuNet if unsure) + SFace, plain templates"
            systems["cascade_plain"] = System(name, cascade, sface, sface_threshold, False)
        if "cascade" in names:
            systems["cascade"] = System("RetinaFace (+YuNet if unsure) + SFace", cascade, sface, sface_threshold, True)
    scrfd, mbf = shared_asset("peers", "scrfd_500m_bnkps.onnx"), shared_asset("peers", "w600k_mbf.onnx")
    if {"peer", "cascade_mbf"} & set(names) and (scrfd is None or mbf is None):
        print("peer weights not in the shared assets: the peer is left out")
    elif scrfd is not None and mbf is not None:
        from bench.peers import MbfEmbedder, ScrfdDetector

        if "peer" in names:
            systems["peer"] = System("peer: SCRFD + MBF", ScrfdDetector(scrfd), MbfEmbedder(mbf))
        if "cascade_mbf" in names:  # diagnosis: our detection and alignment, the peer's embedder
            detector = next((systems[k].detector for k in ("cascade", "cascade_plain") if k in systems), None)
            detector = detector or build_detector("cascade")
            systems["cascade_mbf"] = System("cascade + MBF (diagnosis)", detector, MbfEmbedder(mbf))
    return systems


LEVELS = ("high", "medium", "low")


def levels_of(measured: NDArray[np.float64]) -> NDArray[np.str_]:
    """`service.vision.quality.level` of each row of measures; "none" where no face was found."""
    return np.array(
        [
            "none"
            if np.isnan(row).any()
            else quality_level(
                dict(zip(QUALITY_FIELDS, row.tolist(), strict=False)), covered=covered_of(row), misaligned=row[-1] > 0.5
            )[0]
            for row in measured
        ]
    )


def quality_study(
    pooled: list[SearchResults], measured: list[NDArray[np.float64]], threshold: float, conditions: list[str]
) -> dict[str, Any]:
    """How searches fare by `for_recognition` level at the default threshold, and what the service's
    decision (`threshold_margin`: the margin per level, no match on a misaligned face) and
    abstaining on every `low` face instead (answering unknown) do to DIR and FPIR in each condition."""
    levels = [levels_of(m) for m in measured]
    score = np.concatenate([r.top1_score for r in pooled])
    correct = np.concatenate([r.top1_correct for r in pooled])
    mated = np.concatenate([r.mated for r in pooled])
    every = np.concatenate(levels)
    by_level: dict[str, Any] = {}
    for name in LEVELS:
        here = every == name
        m, n = here & mated, here & ~mated
        by_level[name] = {
            "mated": int(m.sum()),
            "rank1": round(float(correct[m].mean()), 4) if m.any() else None,
            "dir": round(float(np.mean(correct[m] & (score[m] >= threshold))), 4) if m.any() else None,
            "non_mated": int(n.sum()),
            "fpir": round(float(np.mean(score[n] >= threshold)), 4) if n.any() else None,
            "non_mated_top1_p99": round(float(np.quantile(score[n], 0.99)), 4) if n.sum() >= 10 else None,
        }
    rules: dict[str, Any] = {"abstain_on_low": {}, "threshold_margin": {}}
    for condition, results, lv, m in zip(conditions, pooled, levels, measured, strict=True):
        abstain = (results.top1_score >= threshold) & (lv != "low")
        margin = service_accepts(results, m, threshold)
        for rule, accept in (("abstain_on_low", abstain), ("threshold_margin", margin)):
            rules[rule][condition] = {
                "low_share": round(float(np.mean(lv == "low")), 4),
                "misaligned_share": round(float(np.mean(misaligned_of(m))), 4),
                "dir": round(float(np.mean((results.top1_correct & accept)[results.mated])), 4),
                "fpir": round(float(np.mean(accept[~results.mated])), 4),
            }
    return {"by_level": by_level, "threshold_margin": THRESHOLD_MARGIN, **rules}


def end_to_end_ms(systems: dict[str, System], rounds: int, repeat: int) -> dict[str, dict[str, Any]]:
    """A single-face 640x480 JPEG through the service's FacePipeline (decode, detect, align, embed)
    for each system, the systems interleaved over `rounds` rounds of `repeat` calls so that they see
    the same machine load: the median of the round medians of wall and CPU time with their spread,
    and each system's CPU time over YuNet's in the same round (issue 11's speed goal: 1.25x)."""
    from service.vision.pipeline import FacePipeline

    data = FACE_640.read_bytes()

    def once_for(system: System) -> Callable[[], None]:
        pipeline = FacePipeline(system.detector)

        def once() -> None:
            image, faces = pipeline.find(data)
            system.embedder.embed(pipeline.crops([(image, faces[0])], (112, 112)))

        return once

    calls = {key: once_for(system) for key, system in systems.items()}
    per_round: dict[str, list[dict[str, float]]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, once in calls.items():
            per_round[key].append(time_call(once, repeat=repeat))

    def summary(values: list[float]) -> dict[str, Any]:
        return {"median": round(float(np.median(values)), 3), "spread": [min(values), max(values)]}

    out: dict[str, dict[str, Any]] = {}
    for key, timings in per_round.items():
        wall, cpu = [t["median_ms"] for t in timings], [t["cpu_median_ms"] for t in timings]
        out[key] = {"rounds": rounds, "calls_per_round": repeat, "wall_ms": summary(wall), "cpu_ms": summary(cpu)}
        if "yunet" in per_round:
            base = [t["cpu_median_ms"] for t in per_round["yunet"]]
            out[key]["cpu_over_yunet"] = summary([round(c / b, 3) for c, b in zip(cpu, base, strict=True)])
    return out


# --- the report ------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> Path:
    from bench.common import figure
    from training.plots import save_figure

    systems = list(report["systems"])
    fig = figure((13.0, 7.5))
    axes = fig.subplots(2, 2)
    width = 0.8 / max(len(systems), 1)
    x = np.arange(len(CONDITIONS))
    panels = [
        ("detection recall", lambda c: c["detection_recall"]),
        ("rank-1", lambda c: c["rank1"]),
        ("FNIR at FPIR 1%", lambda c: c["fnir_at_fpir_1pct"] or 0.0),
        ("FPIR at the default decision", lambda c: c["at_default"]["fpir"]),
    ]
    for ax, (title, value) in zip(axes.ravel(), panels, strict=True):
        for i, name in enumerate(systems):
            per = report["systems"][name]["conditions"]
            ax.bar(x + i * width, [value(per[c]) for c in CONDITIONS], width, label=report["systems"][name]["name"])
        ax.set_xticks(x + width * (len(systems) - 1) / 2, CONDITIONS, rotation=35, ha="right", fontsize="small")
        ax.set_title(title, fontsize="small")
        if title in ("detection recall", "rank-1"):
            ax.set_ylim(0.8, 1.005)
        if "FPIR at" in title:
            ax.axhline(2 * TARGET_FPIR, color="black", linestyle="--", linewidth=1, label="2x target")
            ax.legend(fontsize="x-small")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distractors", type=int, default=1000)
    parser.add_argument("--systems", default="yunet,retinaface,cascade_plain,cascade,peer")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--face-free", type=int, default=120)
    parser.add_argument("--limit", type=int, default=0, help="at most this many probes of each kind (smoke runs)")
    parser.add_argument("--speed-repeat", type=int, default=100, help="calls per round of the 640x480 timing (0: none)")
    parser.add_argument("--speed-rounds", type=int, default=9, help="interleaved rounds of the 640x480 timing")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = set(conditions) - set(CONDITIONS) - set(EXTRA_CONDITIONS)
    if unknown:
        parser.error(f"unknown conditions {sorted(unknown)}")

    systems = build_systems(args.systems.split(","))
    reference_detectors = [RetinaFaceDetector(load_retinaface_model()), YuNetDetector(load_detector_model())]
    enrolled, mated, strangers = people(cast(list[Detector], reference_detectors))
    if args.limit:
        mated, strangers = mated[: args.limit], strangers[: args.limit]
    subjects = mated + strangers
    labels = np.array([s.label for s in subjects])
    weights = shared_asset("synthetic", "dcgan_digiface_64px.tar")
    if weights is None and args.distractors:
        raise SystemExit("the DCGAN generator is not in the shared assets ($FACEID_SHARED or ../shared)")

    probes = {c: [degrade(s, c, (s.source, s.label, i)) for i, s in enumerate(subjects)] for c in conditions}
    extra: list[Detector] = [*cast(list[Detector], reference_detectors), *(s.detector for s in systems.values())]
    free = face_free(args.face_free, extra)

    report: dict[str, Any] = {
        "machine": machine(),
        "protocol": {
            "enrolled": [s.label for s in enrolled],
            "mated_probes": len(mated),
            "non_mated_probes": len(strangers),
            "distractors": args.distractors,
            "gallery_size": len(enrolled) + args.distractors,
            "face_free_images": len(free),
            "target_fpir": TARGET_FPIR,
        },
        "systems": {},
    }
    table: dict[str, Any] = {}
    for key, system in systems.items():
        enroll_probes = [degrade(s, "clean", ("enroll", s.label)) for s in enrolled]
        g, g_found, _ = run_probes(system, enroll_probes, enroll=True)
        if not g_found.all():
            raise RuntimeError(f"{system.name}: no face in a clean enrollment photo")
        g_labels = np.array([s.label for s in enrolled])
        distractors = (
            cached_distractors(
                system,
                args.distractors,
                cast(Path, weights),
                args.out / "cache" / f"robustness_{key}{'_templates' if system.templates else ''}_seed0.npz",
            )
            if args.distractors
            else np.zeros((0, g.shape[1]), np.float32)
        )
        gallery_size = len(enrolled) + len(distractors)
        threshold = system.threshold(gallery_size) if key not in MBF_SYSTEMS else float("nan")
        per_condition: dict[str, Any] = {}
        pooled: list[SearchResults] = []
        for condition in conditions:
            vectors, found, faces = run_probes(system, probes[condition])
            measured = measure_quality(probes[condition], faces)
            results = searched(g, g_labels, vectors, labels, found, distractors)
            pooled.append(results)
            table[f"{key}/{condition}"] = (results, found, measured)
            covered = [covered_of(row) for row in measured[found]]
            per_condition[condition] = {
                "detection_recall": round(float(found.mean()), 4),
                # the share of found faces that service.vision.occlusion calls covered
                "eyes_covered": round(float(np.mean(["eyes_covered" in c for c in covered])), 4) if covered else None,
                "mouth_covered": round(float(np.mean(["mouth_covered" in c for c in covered])), 4) if covered else None,
            }
        report["systems"][key] = {"name": system.name, "threshold": threshold, "conditions": per_condition}
        report["systems"][key]["_pooled"] = pooled
        detections = [len(system.detector.detect(image)) for image in free]
        report["systems"][key]["face_free"] = {
            "images": len(free),
            "with_a_detection": int(sum(d > 0 for d in detections)),
            "detections": int(sum(detections)),
        }
        print(system.name, "face-free images with a detection:", report["systems"][key]["face_free"])

    if args.speed_repeat:
        # cascade_plain runs /identify exactly as cascade does: templates change enrollment only
        timed = {key: system for key, system in systems.items() if key not in ("cascade_mbf", "cascade_plain")}
        for key, speed in end_to_end_ms(timed, args.speed_rounds, args.speed_repeat).items():
            report["systems"][key]["single_face_640x480"] = speed
            print(systems[key].name, "640x480 end to end:", speed)

    for key in (k for k in MBF_SYSTEMS if k in systems):
        # MBF has no calibrated decision here: it gets the threshold that holds FPIR 1% on its
        # own clean non-mated searches, an oracle in its favour.
        entry = report["systems"][key]
        if "clean" in conditions:
            clean = entry["_pooled"][conditions.index("clean")]
            oracle = threshold_at_rate(clean.top1_score[~clean.mated], TARGET_FPIR)
            entry["threshold"] = oracle[0] + 1e-6 if oracle else PEER_THRESHOLD  # it counts > t, we count >= t
            entry["threshold_source"] = "FPIR 1% on its own clean non-mated searches (oracle)"
        else:
            entry["threshold"] = PEER_THRESHOLD
            entry["threshold_source"] = "bench.accuracy: SFace's ORL 1:1 FAR at 0.40"

    for key in systems:
        entry = report["systems"][key]
        threshold = float(entry["threshold"])
        pooled = entry.pop("_pooled")
        # SFace's default decision is the service's (`service_accepts`); MBF's is its threshold
        accepted = [
            None if key in MBF_SYSTEMS else service_accepts(results, table[f"{key}/{c}"][2], threshold)
            for c, results in zip(conditions, pooled, strict=True)
        ]
        for condition, results, accepts in zip(conditions, pooled, accepted, strict=True):
            entry["conditions"][condition].update(metrics_of(results, threshold, accepts))
        everything = SearchResults(
            np.concatenate([r.top1_score for r in pooled]),
            np.concatenate([r.top1_correct for r in pooled]),
            np.concatenate([r.mated for r in pooled]),
            pooled[0].gallery_identities,
        )
        entry["pooled"] = metrics_of(
            everything, threshold, None if key in MBF_SYSTEMS else np.concatenate(cast(list[Any], accepted))
        )
        if key not in MBF_SYSTEMS:
            per_probe = [table[f"{key}/{c}"][2] for c in conditions]
            entry["quality"] = quality_study(pooled, per_probe, threshold, conditions)
            print(entry["name"], "quality", entry["quality"]["by_level"])
        entry["threshold"] = round(threshold, 4)
        print(entry["name"], "pooled", entry["pooled"])
        for condition in conditions:
            print(f"  {condition:15s}", entry["conditions"][condition])

    args.out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {f"strength__{c}": np.array([p.strength for p in probes[c]]) for c in conditions}
    for key, (results, found, measured) in table.items():
        arrays[f"{key}__quality"] = measured
        arrays[f"{key}__score"] = results.top1_score
        arrays[f"{key}__correct"] = results.top1_correct
        arrays[f"{key}__mated"] = results.mated
        arrays[f"{key}__found"] = found
    # A run with an extra condition is a report of its own: robustness_quarter_turn.json.
    name = "_".join(["robustness", *(c for c in conditions if c in EXTRA_CONDITIONS)])
    np.savez_compressed(args.out / f"{name}_probes.npz", **arrays)
    json_path = write_json(args.out / f"{name}.json", report)
    paths = [json_path]
    if set(conditions) == set(CONDITIONS):
        paths.append(plot(report, args.out / "robustness.png"))
    report_written(*paths, publish_results=args.publish)
    return report


if __name__ == "__main__":
    main()
