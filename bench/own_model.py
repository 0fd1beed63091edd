"""Our own model against SFace and the InsightFace MobileFaceNet peer, on the same crops.

    python -m bench.own_model --model models/faceid-mbf-synth-v1 [--out models/faceid-mbf-synth-v1/eval]

- ORL dev verification: every pair of the 200 ORL dev crops (20 people x 10 photos),
  TAR at FAR 1e-2 and 1e-3 and ROC AUC (`training.metrics.verification_metrics`, what
  `faceid-train eval` reports).
- Open-set identification (`bench.accuracy`'s protocol): s1..s10 enrolled with 1 or 3
  photos, s11..s20 never enrolled, 1,000 DCGAN distractors; FNIR at FPIR 1% and 5%.
- Latency per face, measured as `bench.pipeline` measures SFace's (its `embed_latency`:
  the aligned crop of bench/face_640x480.jpg, batches of 1 and 8, the service's ONNX
  Runtime threads), the models interleaved over `--rounds` rounds so that each sees the
  same machine load: the median, the spread (min, max) over rounds, the CPU time, and the
  ratio to SFace within each round (the steadiest figure on a shared machine).
  `--latency-only` measures this alone (no embeddings, no distractors).

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
from bench.common import FACE_640, OUT, machine, report_written, shared_asset, time_call, write_json
from service.settings import Settings
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import DetectorOptions, YuNetDetector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_detector_model, load_embedder_model
from training.metrics import det_curve, roc_curve, verification_metrics
from training.plots import plot_det, plot_roc

DISTRACTORS = 1000
FARS = (1e-2, 1e-3)


def onnx_embedder(ref: str) -> OnnxEmbedder:
    manifest, model = load_embedder_model(ref)
    return OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"], intra_op_threads=Settings().onnx_threads)


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


def latency(embedders: dict[str, _Embedder], crop: np.ndarray, rounds: int, repeat: int) -> dict[str, Any]:
    """Per-face ms of each model, bench.pipeline's way, the models interleaved round by round."""
    samples: dict[str, dict[str, list[float]]] = {n: {"batch_1": [], "batch_8": [], "cpu_1": []} for n in embedders}
    for _ in range(rounds):
        for name, embedder in embedders.items():
            one = time_call(lambda e=embedder: e.embed([crop]), repeat=repeat)  # type: ignore[misc]
            eight = time_call(lambda e=embedder: e.embed([crop] * 8), repeat=max(3, repeat // 4))  # type: ignore[misc]
            samples[name]["batch_1"].append(one["median_ms"])
            samples[name]["cpu_1"].append(one["cpu_median_ms"])
            samples[name]["batch_8"].append(eight["median_ms"] / 8)
    out: dict[str, Any] = {}
    for name, got in samples.items():
        ratio = [a / b for a, b in zip(got["batch_1"], samples["sface"]["batch_1"], strict=True)]
        out[name] = {
            "batch1_ms_per_face": round(float(np.median(got["batch_1"])), 3),
            "batch1_spread": [round(min(got["batch_1"]), 3), round(max(got["batch_1"]), 3)],
            "batch1_cpu_ms_per_face": round(float(np.median(got["cpu_1"])), 3),
            "batch8_ms_per_face": round(float(np.median(got["batch_8"])), 3),
            "over_sface": round(float(np.median(ratio)), 3),
            "over_sface_spread": [round(min(ratio), 3), round(max(ratio), 3)],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, help="folder with model.onnx and manifest.json (without: cache the baselines only)"
    )
    parser.add_argument("--out", type=Path, help="default: <model>/eval")
    parser.add_argument("--cache", type=Path, default=Path("data/own/cache/distractor_crops_seed0.npy"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--repeat", type=int, default=100, help="batch-1 calls per model per round")
    parser.add_argument("--latency-only", action="store_true", help="measure the per-face latency alone")
    parser.add_argument("--publish", action="store_true", help="with --latency-only: copy its JSON to bench/results/")
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

        embedders["mbf_w600k (peer)"] = MbfEmbedder(peer, threads=Settings().onnx_threads)
        keys["mbf_w600k (peer)"] = "mbf_w600k"
    image = decode_image(FACE_640.read_bytes())
    crop = align_face(image, detector.detect(image)[0].landmarks)
    if args.latency_only:
        timing = {
            "machine": machine(),
            "onnx_threads": Settings().onnx_threads,
            "rounds": args.rounds,
            "calls_per_round": args.repeat,
            "latency": latency(embedders, crop, args.rounds, args.repeat),
        }
        timing["load_average_after"] = machine()["load_average_1_5_15"]
        print(json.dumps(timing, indent=1))
        report_written(write_json((args.out or OUT) / "own_model_latency.json", timing), publish_results=args.publish)
        return timing

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
            "latency": (
                f"bench.pipeline.embed_latency on the crop of face_640x480.jpg, {Settings().onnx_threads} "
                f"ONNX Runtime thread(s), models interleaved over {args.rounds} rounds"
            ),
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
        report["results"][n] = result
        print(n, result)

    for n, timing in latency(embedders, crop, args.rounds, args.repeat).items():
        report["results"][n]["latency"] = timing
    report["machine"]["load_average_after"] = machine()["load_average_1_5_15"]
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
