"""Does the stated FPIR hold for real strangers? The manifest's record, gallery self-calibration, and both.

    python -m bench.self_calibration [--real-sizes 10,15,20,0] [--draws 20] [--detector cascade]
        [--distractors 100,1000,10000] [--targets 0.01,0.05] [--publish]

Galleries of real people: identities drawn (seeded, `--draws` times per size) from a
pool of ORL s1-s10 (photos 1-3 enrolled, 4-10 are mated probes) and the people in the
fixtures' photos (tests/fixtures/photos, one identity per face, Obama's two photos as
one): 28 with the service's detector (the cascade, the default `--detector`), 29 with
YuNet, which also reports a dark blob in sample1.jpg as a face. Size 0 is the whole
pool. Synthetic galleries: the whole pool plus N DCGAN distractors (the
seed-0 stream of `bench.accuracy`). Strangers: every photo of ORL s11-s20 (100
non-mated searches), held out from every calibration (`bench.common.check_held_out`).

For each gallery, target FPIR and policy, the JSON gives the threshold, the FPIR it
states (point and 95% bounds, `ThresholdChoice`), the FPIR measured on the strangers
(with a 95% Clopper-Pearson interval; for repeated draws the strangers are the same
100 people, so the pooled interval is narrower than the evidence), DIR on the mated
probes, and a verdict: `within` when the measured interval meets the stated one,
`above` when the measured FPIR is clearly worse than stated, `below` when clearly
better. Policies, all without the 1:1 floor so that the tail itself is tested:

- record: the manifest's record alone (`self_calibration=False`);
- self: the gallery's own between-identity pairs alone (the record's real pairs
  removed; its synthetic shape still extends the tail past the gallery's pairs);
- both: the record as a prior pooled with the gallery's pairs (the service default,
  which lets the gallery decide from 45 pairs of people on);
- service: `both` with the 1:1 floor, what `/identify` uses.

The manifest's record was made with YuNet crops; the faces here are aligned by the
service's detector, so the record's promise is tested as `/identify` would use it.
Writes bench/out/self_calibration.json and self_calibration.png.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.accuracy import NEVER_ENROLLED, cached_distractors, embed_batches, orl_crops
from bench.common import (
    OUT,
    REPO,
    add_detector_argument,
    calibration_people,
    detector_named,
    held_out_sface,
    machine,
    report_written,
    shared_asset,
    write_json,
)
from service.calibration import SelfCalibration
from service.threshold import GalleryAwareThreshold, ThresholdChoice, binomial_bounds
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import Detector
from service.vision.embed import OnnxEmbedder
from service.vision.manifest import ImpostorTail
from training.plots import save_figure

PHOTOS = REPO / "tests" / "fixtures" / "photos"
ENROLLED_PHOTOS = 3
POLICIES = ("record", "self", "both", "service")


@dataclasses.dataclass
class People:
    """Embeddings with their identity, and which are enrolled, mated probes or strangers."""

    vectors: NDArray[np.float32]
    owners: NDArray[np.int64]
    enrolled: NDArray[np.bool_]
    mated: NDArray[np.bool_]
    strangers: NDArray[np.bool_]


def real_people(detector: Detector, embedder: OnnxEmbedder) -> People:
    crops, people, photos = orl_crops(detector)
    orl = embed_batches(embedder, crops)
    fixture_crops, fixture_owners = [], []
    for index, path in enumerate(sorted(PHOTOS.iterdir())):
        image = decode_image(path.read_bytes())
        for k, face in enumerate(detector.detect(image)):
            fixture_crops.append(align_face(image, face.landmarks))
            fixture_owners.append(1000 if path.stem.startswith("obama") else 100 + 10 * index + k)
    fixtures = embed_batches(embedder, np.stack(fixture_crops))
    is_orl_enrolled = (people <= 10) & (photos <= ENROLLED_PHOTOS)
    n = len(fixtures)
    return People(
        vectors=np.concatenate([orl, fixtures]),
        owners=np.concatenate([people, np.array(fixture_owners)]),
        enrolled=np.concatenate([is_orl_enrolled, np.ones(n, bool)]),
        mated=np.concatenate([(people <= 10) & ~is_orl_enrolled, np.zeros(n, bool)]),
        strangers=np.concatenate([np.isin(people, list(NEVER_ENROLLED)), np.zeros(n, bool)]),
    )


def policies(record: ImpostorTail, target: float, pair: float) -> dict[str, GalleryAwareThreshold]:
    no_real = dataclasses.replace(record, real_counts=[], real_pairs=0)
    return {
        "record": GalleryAwareThreshold(record, target, pair, floor=False, self_calibration=False),
        "self": GalleryAwareThreshold(no_real, target, pair, floor=False, self_min_identity_pairs=1),
        "both": GalleryAwareThreshold(record, target, pair, floor=False),
        "service": GalleryAwareThreshold(record, target, pair),
    }


def measure(
    choice: ThresholdChoice,
    stranger_top1: NDArray[np.float32],
    mated_top1: NDArray[np.float32],
    mated_correct: NDArray[np.bool_],
) -> dict[str, Any]:
    passed = int(np.sum(stranger_top1 >= choice.value))
    return {
        "threshold": round(choice.value, 4),
        "source": choice.source,
        "stated_fpir": round(choice.expected_fpir or 0.0, 5),
        "stated_bounds": [round(v, 5) for v in choice.fpir_interval or (0.0, 0.0)],
        "extrapolated": choice.extrapolated,
        "strangers": len(stranger_top1),
        "strangers_passed": passed,
        "dir": round(float(np.mean(mated_correct & (mated_top1 >= choice.value))), 4) if len(mated_top1) else None,
    }


def verdict(passed: int, total: int, stated: list[float]) -> tuple[list[float], str]:
    low, high = binomial_bounds(passed, total, 0.975)  # two-sided 95%
    if low > stated[1]:
        return [round(low, 4), round(high, 4)], "above"
    if high < stated[0]:
        return [round(low, 4), round(high, 4)], "below"
    return [round(low, 4), round(high, 4)], "within"


def evaluate_gallery(
    people: People,
    members: NDArray[np.bool_],
    extra: NDArray[np.float32],
    policy_set: dict[str, GalleryAwareThreshold],
) -> dict[str, dict[str, Any]]:
    gallery = np.concatenate([people.vectors[members], extra])
    owners = np.concatenate([people.owners[members], -1 - np.arange(len(extra))])
    calibration = SelfCalibration()
    calibration.add(np.arange(len(gallery)), owners, gallery)
    tail = calibration.tail()
    stranger_top1 = (people.vectors[people.strangers] @ gallery.T).max(axis=1)
    mated = people.mated & np.isin(people.owners, owners)
    sims = people.vectors[mated] @ gallery.T
    mated_top1 = sims.max(axis=1) if len(sims) else np.zeros(0, np.float32)
    mated_correct = owners[sims.argmax(axis=1)] == people.owners[mated] if len(sims) else np.zeros(0, bool)
    out = {}
    for name, policy in policy_set.items():
        choice = policy.choose(len(gallery), tail)
        out[name] = measure(choice, stranger_top1, mated_top1, mated_correct) | {"pairs": choice.pairs}
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool repeated draws of one gallery size: measured over every stranger search, stated as the mean."""
    passed = sum(r["strangers_passed"] for r in rows)
    total = sum(r["strangers"] for r in rows)
    stated = [float(np.mean([r["stated_bounds"][i] for r in rows])) for i in (0, 1)]
    interval, word = verdict(passed, total, stated)
    dirs = [r["dir"] for r in rows if r["dir"] is not None]
    return {
        "draws": len(rows),
        "threshold_mean": round(float(np.mean([r["threshold"] for r in rows])), 4),
        "threshold_range": [min(r["threshold"] for r in rows), max(r["threshold"] for r in rows)],
        "sources": sorted({r["source"] for r in rows}),
        "stated_fpir": round(float(np.mean([r["stated_fpir"] for r in rows])), 5),
        "stated_bounds": [round(v, 5) for v in stated],
        "extrapolated": any(r["extrapolated"] for r in rows),
        "measured_fpir": round(passed / total, 4),
        "measured_95": interval,
        "verdict": word,
        "dir": round(float(np.mean(dirs)), 4) if dirs else None,
        "gallery_pairs": rows[0]["pairs"].get("gallery"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-sizes", default="10,15,20,0", help="identities per real gallery (0: the whole pool)")
    parser.add_argument("--draws", type=int, default=20, help="random galleries per real size")
    parser.add_argument("--distractors", default="100,1000,10000", help="DCGAN faces added to the whole pool")
    parser.add_argument("--targets", default="0.01,0.05")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true")
    add_detector_argument(parser)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.real_sizes.split(",") if s]
    counts = [int(c) for c in args.distractors.split(",") if c]
    targets = [float(t) for t in args.targets.split(",")]

    detector = detector_named(args.detector)
    embedder, impostors = held_out_sface(f"orl:s{p}" for p in NEVER_ENROLLED)
    manifest = embedder.manifest
    people = real_people(detector, embedder)
    pool = np.unique(people.owners[people.enrolled])
    distractors = np.zeros((0, manifest.embedding_size), np.float32)
    if counts:
        weights = shared_asset("synthetic", "dcgan_digiface_64px.tar")
        distractors = cached_distractors(
            max(counts), detector, {"sface": embedder}, weights, args.out / "cache" / f"distractors_{args.detector}.npz"
        )["sface"]
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "machine": machine(),
        "detector": args.detector,
        "pool_identities": len(pool),
        "strangers": [f"orl:s{p}" for p in NEVER_ENROLLED],
        "calibrated_on": sorted(calibration_people(manifest)),
        "targets": targets,
        "results": {},
    }
    for target in targets:
        policy_set = policies(impostors, target, manifest.threshold.cosine)
        per_target: dict[str, Any] = {}
        for asked in sizes:
            size = len(pool) if asked <= 0 else min(asked, len(pool))
            draws = 1 if size >= len(pool) else args.draws
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in POLICIES}
            for _ in range(draws):
                chosen = rng.choice(pool, size=size, replace=False)
                members = people.enrolled & np.isin(people.owners, chosen)
                for name, row in evaluate_gallery(people, members, distractors[:0], policy_set).items():
                    rows[name].append(row)
            per_target[f"real_{size}"] = {name: summarise(r) for name, r in rows.items()}
            print(target, f"real_{size}", {n: per_target[f"real_{size}"][n]["measured_fpir"] for n in POLICIES})
        for count in counts:
            members = people.enrolled.copy()
            result = evaluate_gallery(people, members, distractors[:count], policy_set)
            per_target[f"real_{len(pool)}+{count}_dcgan"] = {name: summarise([row]) for name, row in result.items()}
            print(target, count, {n: (r["threshold"], r["strangers_passed"]) for n, r in result.items()})
        report["results"][f"{target:g}"] = per_target
    json_path = write_json(args.out / "self_calibration.json", report)
    plot = _plot(report, args.out / "self_calibration.png")
    report_written(json_path, plot, publish_results=args.publish)
    return report


def _plot(report: dict[str, Any], path: Path) -> Path:
    from bench.common import figure

    targets = list(report["results"])
    fig = figure((6.5 * len(targets), 4.8))
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    colours = {"record": "tab:blue", "self": "tab:orange", "both": "tab:green", "service": "tab:grey"}
    for ax, target in zip(axes, targets, strict=True):
        galleries = list(report["results"][target])
        for offset, name in enumerate(POLICIES):
            xs = np.arange(len(galleries)) + (offset - 1.5) * 0.18
            rows = [report["results"][target][g][name] for g in galleries]
            stated = np.array([r["stated_fpir"] for r in rows])
            bounds = np.array([r["stated_bounds"] for r in rows])
            ax.errorbar(
                xs - 0.04,
                stated,
                yerr=[stated - bounds[:, 0], bounds[:, 1] - stated],
                fmt="o",
                mfc="white",
                color=colours[name],
                capsize=3,
                label=f"{name}: stated",
            )
            measured = np.array([r["measured_fpir"] for r in rows])
            ci = np.array([r["measured_95"] for r in rows])
            ax.errorbar(
                xs + 0.04,
                measured,
                yerr=[measured - ci[:, 0], ci[:, 1] - measured],
                fmt="s",
                color=colours[name],
                capsize=3,
                label=f"{name}: measured",
            )
        ax.axhline(float(target), color="black", linewidth=0.8, linestyle=":")
        ax.set_xticks(np.arange(len(galleries)))
        ax.set_xticklabels([g.replace("real_", "").replace("_dcgan", " dcgan") for g in galleries], fontsize=7)
        ax.set(xlabel="gallery (real identities [+ DCGAN faces])", ylabel="FPIR on 100 held-out ORL strangers")
        ax.set_title(f"target FPIR {target}: stated (open) vs measured (filled), 95% bars", fontsize="small")
        ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
