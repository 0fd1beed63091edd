"""Our own model against SFace and the InsightFace MobileFaceNet peer, on the same crops.

    python -m bench.own_model --model models/faceid-mbf-synth-v1 [--out models/faceid-mbf-synth-v1/eval]

- ORL dev verification: every pair of the 200 ORL dev crops (20 people x 10 photos),
  TAR at FAR 1e-2 and 1e-3 and ROC AUC (`training.metrics.verification_metrics`, what
  `faceid-train eval` reports).
- Open-set identification (`bench.accuracy`'s protocol): s1..s10 enrolled with 1 or 3
  photos, s11..s20 never enrolled, 1,000 DCGAN distractors; FNIR at FPIR 1% and 5%.
- CPU latency per face: `embed` on 64 crops in batches of 1 and of 8, one intra-op
  thread, the three models in turn in one process (wall and CPU time).

Writes report.json, roc.png and det_open_set_{1,3}.png under --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.accuracy import _Embedder, distractor_crops, embed_batches, evaluate, orl_crops
from bench.common import machine, shared_asset, time_call, write_json
from service.vision.detect import DetectorOptions, YuNetDetector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_detector_model, load_embedder_model
from training.metrics import det_curve, roc_curve, verification_metrics
from training.plots import plot_det, plot_roc

DISTRACTORS = 1000
FARS = (1e-2, 1e-3)
LATENCY_CROPS = 64


def onnx_embedder(ref: str) -> OnnxEmbedder:
    manifest, model = load_embedder_model(ref)
    return OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"], intra_op_threads=1)


def cached_distractor_crops(detector: YuNetDetector, cache: Path) -> np.ndarray:
    """bench.accuracy's first 1,000 distractors (the same stream), kept as crops: every new model embeds them."""
    if cache.exists():
        return np.load(cache)
    weights = shared_asset("synthetic", "dcgan_digiface_64px.tar")
    if weights is None:
        raise FileNotFoundError("distractors need the DCGAN weights (shared assets synthetic/)")
    crops = distractor_crops(DISTRACTORS, detector, weights)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, crops)
    return crops


def all_pairs(people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(len(people), k=1)
    return np.stack([i, j], axis=1), people[i] == people[j]


def latency(embedder: _Embedder, crops: np.ndarray, batch: int) -> dict[str, float]:
    """Per-face wall and CPU ms of embedding `crops` in batches of `batch`."""

    def run() -> None:
        for start in range(0, len(crops), batch):
            embedder.embed(list(crops[start : start + batch]))

    timing = time_call(run, repeat=5, warmup=1)
    return {
        "wall_ms_per_face": round(timing["median_ms"] / len(crops), 3),
        "cpu_ms_per_face": round(timing["cpu_median_ms"] / len(crops), 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, help="folder with model.onnx and manifest.json (without: cache the baselines only)"
    )
    parser.add_argument("--out", type=Path, help="default: <model>/eval")
    parser.add_argument("--cache", type=Path, default=Path("data/own/cache/distractor_crops_seed0.npy"))
    args = parser.parse_args(argv)

    detector = YuNetDetector(load_detector_model(), DetectorOptions())
    embedders: dict[str, _Embedder] = {}
    keys: dict[str, str] = {}
    if args.model is not None:
        manifest_path = args.model / "manifest.json"
        embedders[args.model.name] = onnx_embedder(str(manifest_path))
        keys[args.model.name] = json.loads(manifest_path.read_text())["sha256"][:16]
    embedders["sface"] = onnx_embedder("builtin:sface")
    keys["sface"] = "sface"
    peer = shared_asset("peers", "w600k_mbf.onnx")
    if peer is not None:
        from bench.peers import MbfEmbedder

        embedders["mbf_w600k (peer)"] = MbfEmbedder(peer, threads=1)
        keys["mbf_w600k (peer)"] = "mbf_w600k"

    crops, people, photos = orl_crops(detector)
    orl: dict[str, NDArray[np.float32]] = {}
    distractors: dict[str, NDArray[np.float32]] = {}
    for n, embedder in embedders.items():
        # Embeddings are kept per model (a new model's key is its sha256), so a rerun only embeds what is new.
        cache = args.cache.parent / f"embeddings_{keys[n]}.npz"
        if cache.exists():
            with np.load(cache) as stored:
                orl[n], distractors[n] = stored["orl"], stored["distractors"]
        else:
            orl[n] = embed_batches(embedder, crops)
            distractors[n] = embed_batches(embedder, cached_distractor_crops(detector, args.cache))
            np.savez(cache, orl=orl[n], distractors=distractors[n])
    if args.model is None:
        return {}
    out: Path = args.out or args.model / "eval"
    pairs, issame = all_pairs(people)

    report: dict[str, Any] = {
        "machine": machine(),
        "protocol": {
            "verification": f"all {len(issame)} ORL dev pairs ({int(issame.sum())} genuine), no flip",
            "open_set": "bench.accuracy: s1-s10 enrolled, s11-s20 never enrolled",
            "distractors": DISTRACTORS,
            "latency": f"embed() on {LATENCY_CROPS} ORL crops, one intra-op thread, median of 5",
        },
        "results": {},
    }
    roc = {}
    dets: dict[int, dict[str, Any]] = {1: {}, 3: {}}
    for n, emb in orl.items():
        scores = np.sum(emb[pairs[:, 0]] * emb[pairs[:, 1]], axis=1)
        ver = verification_metrics(scores, issame, fars=FARS)
        roc[n] = roc_curve(scores, issame)
        result: dict[str, Any] = {"verification": ver}
        for k in (1, 3):
            metrics, found = evaluate(emb, people, photos, distractors[n], k, threshold=0.0)
            metrics.pop("at_default_threshold")
            result[f"open_set_enrolled_{k}"] = metrics
            dets[k][n] = det_curve(found)
        result["latency"] = {f"batch_{b}": latency(embedders[n], crops[:LATENCY_CROPS], b) for b in (1, 8)}
        report["results"][n] = result
        print(n, result)

    out.mkdir(parents=True, exist_ok=True)
    plot_roc(roc, out / "roc.png", title="ORL dev verification (all pairs)")
    for k, curves in dets.items():
        plot_det(
            curves,
            out / f"det_open_set_{k}.png",
            title=f"ORL dev open-set, {k} photo(s) enrolled, {DISTRACTORS} distractors",
            xlabel="FPIR (non-mated searches)",
            ylabel="FNIR (mated searches)",
        )
    write_json(out / "report.json", json.loads(json.dumps(report, default=float)))  # numpy scalars as floats
    return report


if __name__ == "__main__":
    main()
