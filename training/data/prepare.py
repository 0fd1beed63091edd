"""`faceid-train prepare`: raw photos per identity -> aligned 112x112 crops, by the service's own code.

Decoding (EXIF orientation, formats, size limits), detection (YuNet, the detector the
shipped models were trained and calibrated with; `--detector cascade` for the service's
default) and 5-point
alignment are the functions the service runs on every request, so a model trained
on these crops sees at training time what it will see when serving. Photos that
cannot be used are listed with the reason in `rejected.csv` and `report.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from service.errors import AmbiguousFaces, ImageTooLarge, InvalidImage, NoFace, UnsupportedImageType
from service.vision.detect import Detector, Face
from service.vision.pipeline import FacePipeline, enrollment_face

RejectReason = Literal["unreadable", "unsupported", "too_large", "no_face", "ambiguous"]
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm", ".ppm", ".pnm"})


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: RejectReason
    detail: str


@dataclass
class PrepareReport:
    identities: int = 0
    photos: int = 0
    written: int = 0
    skipped_existing: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "identities": self.identities,
            "photos": self.photos,
            "written": self.written,
            "skipped_existing": self.skipped_existing,
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(Counter(r.reason for r in self.rejected)),
        }


class Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: RejectReason = reason
        self.detail = detail


def choose_face(faces: list[Face], *, ambiguity_ratio: float) -> Face:
    """The labelled person's face, by the service's own enrollment rule (`enrollment_face`)."""
    try:
        return enrollment_face(faces, ambiguity_ratio)
    except NoFace as exc:
        raise Rejected("no_face", exc.message) from exc
    except AmbiguousFaces as exc:
        raise Rejected("ambiguous", exc.message) from exc


def align_photo(data: bytes, detector: Detector, *, ambiguity_ratio: float = 0.5) -> NDArray[np.uint8]:
    """Encoded photo -> (112, 112, 3) RGB aligned crop, or `Rejected` with the reason.

    Decode, detect and align are `service.vision.pipeline.FacePipeline`'s, as on every request.
    """
    pipeline = FacePipeline(detector)
    try:
        image, faces = pipeline.find(data)
    except UnsupportedImageType as exc:
        raise Rejected("unsupported", exc.message) from exc
    except ImageTooLarge as exc:
        raise Rejected("too_large", exc.message) from exc
    except InvalidImage as exc:
        raise Rejected("unreadable", exc.message) from exc
    face = choose_face(faces, ambiguity_ratio=ambiguity_ratio)
    return pipeline.crops([(image, face)], (112, 112))[0]


def write_crop(path: Path, crop: NDArray[np.uint8]) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), np.ascontiguousarray(crop[:, :, ::-1]), params):
        raise OSError(f"could not write {path}")


def prepare(
    src: Path,
    dst: Path,
    detector: Detector,
    *,
    ambiguity_ratio: float = 0.5,
    suffix: str = ".png",
    progress: bool = True,
) -> PrepareReport:
    """Align every photo of `src/<identity>/` into `dst/<identity>/<stem><suffix>`.

    Crops already present are kept (a stopped run resumes). The report lists every
    rejected photo; `report.json` and `rejected.csv` are written into `dst`.
    """
    src, dst = Path(src), Path(dst)
    identities = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    photos = [
        (identity, path)
        for identity in identities
        for path in sorted(identity.iterdir())
        if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith(".")
    ]
    report = PrepareReport(identities=len(identities), photos=len(photos))
    for identity, path in tqdm(photos, desc="prepare", unit="photo", disable=not progress):
        target = dst / identity.name / (path.stem + suffix)
        if target.exists():
            report.skipped_existing += 1
            continue
        try:
            crop = align_photo(path.read_bytes(), detector, ambiguity_ratio=ambiguity_ratio)
        except Rejected as rejected:
            report.rejected.append(Rejection(str(path.relative_to(src)), rejected.reason, rejected.detail))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_crop(target, crop)
        report.written += 1
    write_report(report, dst)
    return report


def write_report(report: PrepareReport, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    payload = {**report.summary(), "rejections": [asdict(r) for r in report.rejected]}
    (dst / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
    with open(dst / "rejected.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason", "detail"])
        writer.writerows([r.path, r.reason, r.detail] for r in report.rejected)


def default_detector(kind: str | None = None) -> Detector:
    """A detector as the service builds it: YuNet (what the shipped models were trained and
    calibrated with) unless `kind` names another (cascade, retinaface)."""
    from service.vision.detectors import build_detector

    return build_detector(kind or "yunet")  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="raw photos, one sub-folder per identity")
    parser.add_argument("dst", type=Path, help="output: aligned 112x112 crops, same sub-folders")
    parser.add_argument(
        "--ambiguity-ratio",
        type=float,
        default=0.5,
        help="reject a photo whose second-largest face has this fraction of the largest's area (0: any second face)",
    )
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="crop file format (default png)")
    parser.add_argument(
        "--detector",
        choices=("cascade", "retinaface", "yunet"),
        default=None,
        help="face detector (default yunet, as the shipped models were made; cascade is the service's default)",
    )
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    report = prepare(
        args.src,
        args.dst,
        default_detector(args.detector),
        ambiguity_ratio=args.ambiguity_ratio,
        suffix=f".{args.format}",
        progress=not args.no_progress,
    )
    print(json.dumps(report.summary()))
    return 0
