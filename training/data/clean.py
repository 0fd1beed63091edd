"""`faceid-train clean`: drop mislabelled images, and find identities that are one person.

Intra-class (what the ArcFace authors did to MS1M): embed every image with a given
model, take each identity's centre (the normalised mean embedding), and drop the
images whose cosine to that centre is below a threshold. The centre is first
estimated from the images that agree most with each other, then again from the
images that pass, so mislabelled images cannot drag it towards themselves.

Inter-class: identities whose (cleaned) centres are closer than a threshold are
grouped (transitively); each group is merged into one identity or dropped. The
same step removes the overlap between a training set and an evaluation set.

Identities are processed one at a time, so memory grows with the number of
identities (one centre each), not with the number of images, except for the
distillation cache written with `--out`: one embedding per kept image (512 bytes at
128-d), which `--no-teacher-cache` turns off for sets of many millions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from training.data.folder import read_crop, scan_folder
from training.embedders import CropEmbedder, embed_all, l2_normalize

InterAction = Literal["merge", "drop", "report"]


@dataclass(frozen=True)
class CleanOptions:
    threshold: float  # cosine to the identity centre below which an image is dropped
    min_images: int = 2  # identities left with fewer images are dropped
    merge_threshold: float | None = None  # centre-to-centre cosine above which identities are one person
    inter_action: InterAction = "merge"
    batch_size: int = 64


def centre_cosines(embeddings: NDArray[np.float32], threshold: float) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """(cosine of each embedding to the identity centre, keep mask).

    The first centre is the mean of the half of the images that agree most with the
    others (highest mean cosine to the rest), so up to about half of an identity
    can be mislabelled without moving it; the final centre is the mean of the
    images that pass the threshold against the first.
    """
    n = len(embeddings)
    if n > 2:
        agreement = (embeddings @ embeddings.T).sum(axis=1) - 1.0  # (n,) without self-similarity
        core = np.argsort(-agreement, kind="stable")[: (n + 1) // 2]
        centre = l2_normalize(embeddings[core].mean(axis=0, keepdims=True))[0]
    else:
        centre = l2_normalize(embeddings.mean(axis=0, keepdims=True))[0]
    keep = embeddings @ centre >= threshold
    if keep.any():
        centre = l2_normalize(embeddings[keep].mean(axis=0, keepdims=True))[0]
    cosines = (embeddings @ centre).astype(np.float32)
    return cosines, cosines >= threshold


def nearest_centre_cosines(centres: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each centre's cosine to its most similar other centre, (K,); blockwise like `group_close_centres`."""
    nearest = np.full(len(centres), -1.0, np.float32)
    block = 4096
    for start in range(0, len(centres), block):
        sims = centres[start : start + block] @ centres.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf
        if sims.shape[1] > 1:
            nearest[start : start + block] = sims.max(axis=1)
    return nearest


def group_close_centres(centres: NDArray[np.float32], threshold: float) -> list[list[int]]:
    """Groups (of two or more row indices) linked by centre cosine > threshold, transitively (union-find)."""
    parent = list(range(len(centres)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    block = 4096  # (block, K) similarity rows at a time: K x K never held at once
    for start in range(0, len(centres), block):
        sims = centres[start : start + block] @ centres.T
        rows, cols = np.nonzero(sims > threshold)
        for r, c in zip(rows + start, cols, strict=True):
            if r < c:
                parent[find(int(r))] = find(int(c))
    groups: dict[int, list[int]] = {}
    for i in range(len(centres)):
        groups.setdefault(find(i), []).append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0])


@dataclass(frozen=True)
class DroppedImage:
    path: str
    identity: str
    cosine: float


@dataclass
class CleanReport:
    identities: int = 0
    images: int = 0
    kept_images: int = 0
    dropped_images: list[DroppedImage] = field(default_factory=list)
    dropped_identities: list[str] = field(default_factory=list)  # too few images left
    close_groups: list[list[str]] = field(default_factory=list)  # inter-class groups, merged or dropped
    cosine_quantiles: dict[str, float] = field(default_factory=dict)  # of image-to-centre cosines
    # Each identity's most similar other centre: where to put --merge-threshold.
    nearest_centre_quantiles: dict[str, float] = field(default_factory=dict)
    # The distributions themselves, for the report's plot (not written to JSON).
    image_cosines: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    nearest_centres: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    def summary(self) -> dict[str, object]:
        return {
            "identities": self.identities,
            "images": self.images,
            "kept_images": self.kept_images,
            "dropped_images": len(self.dropped_images),
            "dropped_identities": len(self.dropped_identities),
            "close_groups": len(self.close_groups),
            "cosine_quantiles": self.cosine_quantiles,
            "nearest_centre_quantiles": self.nearest_centre_quantiles,
        }


@dataclass
class _Identity:
    name: str
    paths: list[Path]
    keep: NDArray[np.bool_]
    centre: NDArray[np.float32]
    embeddings: NDArray[np.float32] | None  # kept only when the cleaned copy gets a teacher cache


def clean_folder(
    src: Path,
    embedder: CropEmbedder,
    options: CleanOptions,
    *,
    dst: Path | None = None,
    report_dir: Path | None = None,
    teacher_ref: str | None = None,
    progress: bool = True,
) -> CleanReport:
    """Clean the aligned folder `src`; with `dst`, write the cleaned copy there (hard links where possible).

    With `dst` and `teacher_ref` (how a training config names `embedder`, e.g.
    `builtin:sface`), the embeddings already computed are saved in the copy as the
    distillation cache (`training.distill`), so training with that teacher does not
    embed every crop a second time.
    """
    src = Path(src)
    classes, samples = scan_folder(src)
    by_class: dict[int, list[Path]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    report = CleanReport(identities=len(classes), images=len(samples))
    kept: list[_Identity] = []
    all_cosines: list[NDArray[np.float32]] = []
    for label in tqdm(sorted(by_class), desc="clean", unit="identity", disable=not progress):
        paths = by_class[label]
        emb = embed_all(embedder, [read_crop(p) for p in paths], batch_size=options.batch_size)
        cosines, keep = centre_cosines(emb, options.threshold)
        all_cosines.append(cosines)
        name = classes[label]
        report.dropped_images += [
            DroppedImage(str(p.relative_to(src)), name, float(c))
            for p, c, k in zip(paths, cosines, keep, strict=True)
            if not k
        ]
        if int(keep.sum()) < options.min_images:
            report.dropped_identities.append(name)
            continue
        centre = l2_normalize(emb[keep].mean(axis=0, keepdims=True))[0]
        kept.append(_Identity(name, paths, keep, centre, emb if teacher_ref and dst is not None else None))
    if all_cosines:
        flat = np.concatenate(all_cosines)
        report.cosine_quantiles = {f"q{q:02d}": float(np.percentile(flat, q)) for q in (1, 5, 25, 50, 75)}
        report.image_cosines = flat

    groups: list[list[int]] = []
    if len(kept) > 1:
        centres = np.stack([k.centre for k in kept])
        nearest = nearest_centre_cosines(centres)
        report.nearest_centres = nearest
        report.nearest_centre_quantiles = {f"q{q:02d}": float(np.percentile(nearest, q)) for q in (50, 90, 99, 100)}
        if options.merge_threshold is not None:
            groups = group_close_centres(centres, options.merge_threshold)
        report.close_groups = [[kept[i].name for i in g] for g in groups]

    target: dict[int, str | None] = {i: kept[i].name for i in range(len(kept))}
    if options.inter_action != "report":
        for group in groups:
            for i in group:
                target[i] = kept[group[0]].name if options.inter_action == "merge" else None
    report.kept_images = sum(int(k.keep.sum()) for i, k in enumerate(kept) if target[i] is not None)
    if dst is not None:
        written = _write_clean_copy(kept, target, Path(dst))
        if teacher_ref is not None:
            _save_teacher_cache(Path(dst), written, teacher_ref)
    out_dir = report_dir if report_dir is not None else dst
    if out_dir is not None:
        write_report(report, options, Path(out_dir))
    return report


def _write_clean_copy(
    kept: list[_Identity], target: dict[int, str | None], dst: Path
) -> dict[Path, NDArray[np.float32]]:
    """Write the kept images under their (merged) identity; returns {written path: embedding} where known."""
    written: dict[Path, NDArray[np.float32]] = {}
    for i, identity in enumerate(kept):
        name = target[i]
        if name is None:
            continue
        out = dst / name
        out.mkdir(parents=True, exist_ok=True)
        for j, (path, keep) in enumerate(zip(identity.paths, identity.keep, strict=True)):
            if not keep:
                continue
            # Merged identities can share file names: prefix with the source identity.
            dest = out / (path.name if name == identity.name else f"{identity.name}__{path.name}")
            if identity.embeddings is not None:
                written[dest] = identity.embeddings[j]
            if dest.exists():
                continue
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
    return written


def _save_teacher_cache(dst: Path, written: dict[Path, NDArray[np.float32]], teacher_ref: str) -> None:
    """The copy's embeddings in `training.distill`'s cache layout; skipped if `dst` holds files not written now."""
    from training.distill import cache_path

    _, samples = scan_folder(dst)
    if samples and all(path in written for path, _ in samples):
        np.save(cache_path(dst, samples, teacher_ref), np.stack([written[path] for path, _ in samples]))


def write_report(report: CleanReport, options: CleanOptions, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "options": asdict(options),
        **report.summary(),
        "dropped_identity_names": report.dropped_identities,
        "close_group_names": report.close_groups,
        "dropped": [asdict(d) for d in report.dropped_images],
    }
    (out_dir / "clean_report.json").write_text(json.dumps(payload, indent=2) + "\n")
    if len(report.image_cosines):
        from training.plots import plot_clean

        plot_clean(
            report.image_cosines,
            report.nearest_centres,
            options.threshold,
            options.merge_threshold,
            out_dir / "clean_report.png",
        )
    with open(out_dir / "clean_dropped.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "identity", "cosine_to_centre"])
        writer.writerows([d.path, d.identity, f"{d.cosine:.4f}"] for d in report.dropped_images)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="aligned folder, one sub-folder per identity")
    parser.add_argument("--manifest", required=True, help="model to embed with: a manifest path or builtin:sface")
    parser.add_argument("--out", type=Path, help="write the cleaned folder here (default: report only)")
    parser.add_argument("--report", type=Path, help="folder for clean_report.json and clean_dropped.csv")
    parser.add_argument(
        "--threshold",
        type=float,
        help="drop images whose cosine to their identity centre is below this "
        "(default: the model's calibrated 1:1 threshold from its manifest)",
    )
    parser.add_argument("--min-images", type=int, default=2, help="drop identities left with fewer images")
    parser.add_argument("--merge-threshold", type=float, help="identities whose centres are closer than this cosine")
    parser.add_argument(
        "--inter-action",
        choices=("merge", "drop", "report"),
        default="merge",
        help="what to do with identities closer than --merge-threshold",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--no-teacher-cache",
        action="store_true",
        help="do not keep the embeddings as --out's distillation cache (saves memory on huge sets)",
    )
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from training.embedders import load_onnx_embedder

    if args.out is None and args.report is None:
        raise SystemExit("clean: give --out (cleaned copy and report) or --report (report only)")
    embedder = load_onnx_embedder(args.manifest)
    threshold = args.threshold
    if threshold is None:
        threshold = float(embedder.manifest.threshold.cosine)
    options = CleanOptions(
        threshold=threshold,
        min_images=args.min_images,
        merge_threshold=args.merge_threshold,
        inter_action=args.inter_action,
        batch_size=args.batch_size,
    )
    report = clean_folder(
        args.src,
        embedder,
        options,
        dst=args.out,
        report_dir=args.report,
        teacher_ref=None if args.no_teacher_cache else args.manifest,
        progress=not args.no_progress,
    )
    print(json.dumps(report.summary()))
    return 0
