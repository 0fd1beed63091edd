"""Does the gallery-aware threshold keep strangers out as the gallery grows?

    python -m bench.threshold [--distractors 100,1000,10000] [--targets 0.01,0.05] [--detector cascade] [--publish]

Gallery: ORL s1..s10 with 3 photos each, plus N DCGAN distractors (each its own
identity; the same seed-0 faces as bench.accuracy, disjoint from the seed-1001
people the SFace manifest was calibrated on). Non-mated probes: every photo of
ORL s11..s20 (never enrolled, never used for calibration). Mated probes: photos
4..10 of s1..s10. For each N this reports the FPIR and DIR of

- the fixed 1:1 threshold (the manifest's 0.40), and
- the service's gallery-aware threshold (`service.threshold.GalleryAwareThreshold`)
  at each target FPIR, computed for the gallery's size in faces, as the service does,
  with the FPIR it promises (point and 95% bounds) and whether it extrapolates.

Held out: the script refuses to run when the manifest's calibration people include
any of the strangers (`bench.common.check_held_out`). With 100 real strangers FPIR
moves in steps of 1%; each measured FPIR comes with its 95% Clopper-Pearson interval.
The JSON also reports FPIR for 1,000 synthetic strangers (seed 7, never enrolled,
never calibrated on), and it is bad news for synthetic galleries: to SFace, DCGAN
faces resemble each other far more than real people do, so most synthetic strangers
pass every one of these thresholds against DCGAN distractors (calibration leaves
synthetic-vs-synthetic pairs out; gallery self-calibration is what catches it, see
`bench.self_calibration`).
Faces are found and aligned by the service's own detector (`--detector`, by default
FACEID_DETECTOR's default, the cascade), as `/identify` would align them; the impostor
record in the manifest was made with YuNet crops, so this also checks that its
promise carries over to the service's alignment.
Writes bench/out/threshold.json and bench/out/threshold_fpir.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.accuracy import ENROLLED, NEVER_ENROLLED, cached_distractors, embed_batches, orl_crops
from bench.common import (
    ORL_STRANGERS,
    OUT,
    add_detector_argument,
    calibration_people,
    detector_named,
    held_out_sface,
    machine,
    report_written,
    shared_asset,
    write_json,
)
from service.threshold import GalleryAwareThreshold, binomial_bounds
from service.vision.detect import Detector
from service.vision.embed import OnnxEmbedder
from training.plots import save_figure

ENROLLED_PHOTOS = 3


def top1(probes: NDArray[np.float32], gallery: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.asarray((probes @ gallery.T).max(axis=1), dtype=np.float32)


def rates(
    threshold: float,
    stranger_top1: NDArray[np.float32],
    mated_top1: NDArray[np.float32],
    mated_correct: NDArray[np.bool_],
) -> dict[str, Any]:
    passed = int(np.sum(stranger_top1 >= threshold))
    low, high = binomial_bounds(passed, len(stranger_top1), 0.975)
    return {
        "threshold": round(threshold, 4),
        "fpir": round(passed / len(stranger_top1), 4),
        "fpir_95": [round(low, 4), round(high, 4)],
        "dir": round(float(np.mean(mated_correct & (mated_top1 >= threshold))), 4),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distractors", default="100,1000,10000")
    parser.add_argument("--targets", default="0.01,0.05")
    parser.add_argument("--synthetic-strangers", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true")
    add_detector_argument(parser)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.distractors.split(",")]
    targets = [float(t) for t in args.targets.split(",")]

    detector = detector_named(args.detector)
    embedder, impostors = held_out_sface(f"orl:s{p}" for p in NEVER_ENROLLED)
    manifest = embedder.manifest
    assert set(ORL_STRANGERS) == {f"orl:s{p}" for p in NEVER_ENROLLED}
    weights = shared_asset("synthetic", "dcgan_digiface_64px.tar")
    crops, people, photos = orl_crops(detector)
    orl = embed_batches(embedder, crops)
    distractors = cached_distractors(
        max(counts), detector, {"sface": embedder}, weights, args.out / "cache" / f"distractors_{args.detector}.npz"
    )["sface"]
    strangers_synthetic = _synthetic_strangers(args, detector, embedder, weights)

    enrolled = np.isin(people, list(ENROLLED)) & (photos <= ENROLLED_PHOTOS)
    mated = np.isin(people, list(ENROLLED)) & ~enrolled
    strangers = np.isin(people, list(NEVER_ENROLLED))
    fixed = manifest.threshold.cosine
    policies = {t: GalleryAwareThreshold(impostors, t, fixed) for t in targets}

    report: dict[str, Any] = {
        "machine": machine(),
        "detector": args.detector,
        "fixed_threshold": fixed,
        "targets": targets,
        "strangers": [f"orl:s{p}" for p in NEVER_ENROLLED],
        "calibrated_on": sorted(calibration_people(manifest)),
        "results": {},
    }
    for count in counts:
        gallery = np.concatenate([orl[enrolled], distractors[:count]])
        owners = np.concatenate([people[enrolled], -1 - np.arange(count)])
        size = len(gallery)
        sims = orl[mated] @ gallery.T
        mated_top1 = sims.max(axis=1)
        mated_correct = owners[sims.argmax(axis=1)] == people[mated]
        real_top1 = top1(orl[strangers], gallery)
        synth_top1 = top1(strangers_synthetic, gallery) if len(strangers_synthetic) else np.zeros(0, np.float32)
        row: dict[str, Any] = {
            "gallery_faces": size,
            "fixed": rates(fixed, real_top1, mated_top1, mated_correct)
            | {"fpir_synthetic_strangers": _share(synth_top1, fixed)},
        }
        for target, policy in policies.items():
            choice = policy.choose(size)
            row[f"target_{target:g}"] = rates(choice.value, real_top1, mated_top1, mated_correct) | {
                "expected_fpir": round(float(choice.expected_fpir or 0.0), 4),
                "expected_fpir_bounds": [round(v, 4) for v in choice.fpir_interval or (0.0, 0.0)],
                "extrapolated": choice.extrapolated,
                "basis": choice.basis,
                "fpir_synthetic_strangers": _share(synth_top1, choice.value),
            }
        report["results"][str(count)] = row
        print(count, row)
    json_path = write_json(args.out / "threshold.json", report)
    plot = _plot(report, args.out / "threshold_fpir.png")
    report_written(json_path, plot, publish_results=args.publish)
    return report


def _share(scores: NDArray[np.float32], threshold: float) -> float | None:
    return round(float(np.mean(scores >= threshold)), 4) if len(scores) else None


def _synthetic_strangers(
    args: argparse.Namespace, detector: Detector, embedder: OnnxEmbedder, weights: Path | None
) -> NDArray[np.float32]:
    if args.synthetic_strangers <= 0 or weights is None:
        return np.zeros((0, embedder.manifest.embedding_size), np.float32)
    from bench.accuracy import distractor_crops

    cache = args.out / "cache" / f"strangers_seed7_{args.synthetic_strangers}_{args.detector}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return np.asarray(stored["sface"], dtype=np.float32)
    crops = distractor_crops(args.synthetic_strangers, detector, weights, seed=7)
    embeddings = embed_batches(embedder, crops)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, sface=embeddings)
    return embeddings


def _plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = [int(c) for c in report["results"]]
    fig, (ax_fpir, ax_dir) = plt.subplots(1, 2, figsize=(10, 4))
    series = ["fixed"] + [f"target_{t:g}" for t in report["targets"]]
    for key in series:
        label = f"fixed {report['fixed_threshold']}" if key == "fixed" else f"gallery-aware, FPIR {key[7:]}"
        fpir = [report["results"][str(c)][key]["fpir"] for c in counts]
        dir_ = [report["results"][str(c)][key]["dir"] for c in counts]
        (line,) = ax_fpir.plot(counts, fpir, marker="o", label=label)
        ax_dir.plot(counts, dir_, marker="o", color=line.get_color(), label=label)
    for target in report["targets"]:
        ax_fpir.axhline(target, color="grey", linewidth=0.8, linestyle=":")
    ax_fpir.set(xscale="log", xlabel="distractors in the gallery", ylabel="FPIR (ORL strangers matched)")
    ax_dir.set(xscale="log", xlabel="distractors in the gallery", ylabel="DIR (enrolled people found)")
    ax_fpir.legend(fontsize=7)
    ax_dir.legend(fontsize=7)
    fig.suptitle("SFace: fixed threshold vs gallery-aware threshold (ORL + DCGAN distractors)")
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
