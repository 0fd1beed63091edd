"""`faceid-train eval`: verification and open-set identification of a model, with plots and a JSON report.

The model is an exported ONNX file with its manifest (or a built-in, `builtin:sface`),
run by the service's own embedder, or a training checkpoint run in PyTorch. The
data are InsightFace `.bin` pair files and aligned folders; a folder gives
deterministic pairs (half genuine) and a gallery/probe split for open-set search,
optionally against a folder of distractor faces.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from training.embedders import CropEmbedder, embed_all, load_checkpoint, load_onnx_embedder
from training.metrics import (
    DEFAULT_FARS,
    DEFAULT_FPIRS,
    det_curve,
    roc_curve,
    search,
    search_metrics,
    split_gallery_probe,
    verification_metrics,
)
from training.plots import Curve, plot_det, plot_roc


@dataclass
class EvalOptions:
    flip: bool = False
    batch_size: int = 64
    fars: tuple[float, ...] = DEFAULT_FARS
    fpirs: tuple[float, ...] = DEFAULT_FPIRS
    num_pairs: int = 3000
    seed: int = 0
    enrolled_fraction: float = 0.5
    templates_per_identity: int = 1
    progress: bool = True


@dataclass
class EvalResult:
    report: dict[str, Any] = field(default_factory=dict)
    roc: dict[str, Curve] = field(default_factory=dict)
    det: dict[str, Curve] = field(default_factory=dict)
    open_set_det: dict[str, Curve] = field(default_factory=dict)


def pair_scores(embeddings: NDArray[np.float32]) -> NDArray[np.float32]:
    """Cosine of consecutive rows (0,1), (2,3), ... of unit embeddings."""
    return np.sum(embeddings[0::2] * embeddings[1::2], axis=1)


def evaluate_pairs(
    embedder: CropEmbedder,
    name: str,
    images: list[NDArray[np.uint8]],
    issame: NDArray[np.bool_],
    options: EvalOptions,
    result: EvalResult,
) -> dict[str, Any]:
    emb = embed_all(embedder, images, flip=options.flip, batch_size=options.batch_size, desc=_desc(name, options))
    scores = pair_scores(emb)
    return _verification(name, scores, issame, options, result)


def evaluate_labelled(
    embedder: CropEmbedder,
    name: str,
    crops: list[NDArray[np.uint8]],
    labels: NDArray[np.int64],
    options: EvalOptions,
    result: EvalResult,
    *,
    distractors: NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """Verification on sampled pairs and open-set search on a gallery/probe split of one labelled set."""
    from training.data.folder import max_balanced_pairs, sample_pairs

    emb = embed_all(embedder, crops, flip=options.flip, batch_size=options.batch_size, desc=_desc(name, options))
    out: dict[str, Any] = {"images": len(crops), "identities": len(np.unique(labels))}
    # Half of what is possible at most: drawing nearly every distinct pair by rejection would crawl.
    num_pairs = min(options.num_pairs, max_balanced_pairs(labels) // 2)
    pairs, issame = sample_pairs(labels, num_pairs, seed=options.seed)
    scores = np.sum(emb[pairs[:, 0]] * emb[pairs[:, 1]], axis=1)
    out["verification"] = _verification(name, scores, issame, options, result)
    gallery, probes = split_gallery_probe(
        labels,
        enrolled_fraction=options.enrolled_fraction,
        templates_per_identity=options.templates_per_identity,
        seed=options.seed,
    )
    if len(gallery) and len(probes):
        found = search(emb[gallery], labels[gallery], emb[probes], labels[probes], distractors=distractors)
        out["open_set"] = search_metrics(found, fpirs=options.fpirs)
        out["open_set"]["distractors"] = 0 if distractors is None else len(distractors)
        result.open_set_det[name] = det_curve(found)
    return out


def _verification(
    name: str, scores: NDArray[Any], issame: NDArray[np.bool_], options: EvalOptions, result: EvalResult
) -> dict[str, Any]:
    metrics = verification_metrics(scores, issame, fars=options.fars)
    far, tar = roc_curve(scores, issame)
    result.roc[name] = (far, tar)
    result.det[name] = (far, 1.0 - tar)
    return metrics


def _desc(name: str, options: EvalOptions) -> str | None:
    return f"embed {name}" if options.progress else None


def write_outputs(result: EvalResult, out_dir: Path) -> Path:
    """report.json, roc.png, det.png and (with open-set results) open_set_det.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    if result.roc:
        plots["roc"] = plot_roc(result.roc, out_dir / "roc.png").name
        plots["det"] = plot_det(
            result.det,
            out_dir / "det.png",
            title="DET (verification)",
            xlabel="false match rate (FMR)",
            ylabel="false non-match rate (FNMR)",
        ).name
    if result.open_set_det:
        plots["open_set_det"] = plot_det(
            result.open_set_det,
            out_dir / "open_set_det.png",
            title="DET (open-set identification)",
            xlabel="false positive identification rate (FPIR)",
            ylabel="false negative identification rate (FNIR)",
        ).name
    result.report["plots"] = plots
    path = out_dir / "report.json"
    path.write_text(json.dumps(result.report, indent=2) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--manifest", help="ONNX model manifest (file or folder), or builtin:sface")
    model.add_argument("--checkpoint", type=Path, help="training checkpoint (run in PyTorch)")
    parser.add_argument("--bin", type=Path, action="append", default=[], help="InsightFace .bin pairs (repeatable)")
    parser.add_argument(
        "--folder", type=Path, action="append", default=[], help="aligned folder, one sub-folder per identity"
    )
    parser.add_argument("--distractors", type=Path, help="aligned folder whose faces join every gallery as distractors")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and the plots")
    parser.add_argument("--pairs", type=int, default=3000, help="pairs drawn from each folder (default 3000)")
    parser.add_argument("--limit-pairs", type=int, help="use only the first N pairs of each .bin")
    parser.add_argument("--flip", action="store_true", help="add the mirrored crop's embedding (InsightFace's test)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="pair sampling and gallery split")
    parser.add_argument("--enrolled-fraction", type=float, default=0.5, help="identities enrolled in the gallery")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from training.data.folder import load_folder
    from training.data.verification_bin import load_bin

    if not args.bin and not args.folder:
        raise SystemExit("eval: give at least one --bin or --folder")
    options = EvalOptions(
        flip=args.flip,
        batch_size=args.batch_size,
        num_pairs=args.pairs,
        seed=args.seed,
        enrolled_fraction=args.enrolled_fraction,
        progress=not args.no_progress,
    )
    embedder: CropEmbedder
    if args.checkpoint is not None:
        model, cfg = load_checkpoint(args.checkpoint)
        from training.embedders import TorchEmbedder

        embedder = TorchEmbedder(model)
        source = {"checkpoint": str(args.checkpoint), "backbone": cfg.backbone.name}
    else:
        onnx_embedder = load_onnx_embedder(args.manifest)
        embedder = onnx_embedder
        source = {"manifest": str(args.manifest), "model_id": onnx_embedder.manifest.model_id}
    result = EvalResult(report={"model": source, "flip": options.flip, "datasets": {}})
    for path in args.bin:
        pairs = load_bin(path, limit_pairs=args.limit_pairs)
        result.report["datasets"][pairs.name] = {
            "verification": evaluate_pairs(embedder, pairs.name, pairs.images, pairs.issame, options, result)
        }
    distractors = None
    if args.distractors is not None:
        crops, _, _ = load_folder(args.distractors)
        distractors = embed_all(embedder, crops, flip=options.flip, batch_size=options.batch_size)
    for root in args.folder:
        crops, labels, _ = load_folder(root)
        result.report["datasets"][root.name] = evaluate_labelled(
            embedder, root.name, crops, labels, options, result, distractors=distractors
        )
    report = write_outputs(result, args.out)
    for name, entry in result.report["datasets"].items():
        v = entry["verification"]
        line = f"{name}: accuracy {v['accuracy']:.4f} ± {v['accuracy_std']:.4f}, AUC {v['auc']:.4f}"
        if "open_set" in entry:
            line += f", rank-1 {entry['open_set']['rank1']:.4f}"
        print(line)
    print(f"report: {report}")
    return 0
