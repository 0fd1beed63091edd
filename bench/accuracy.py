"""Open-set identification on the ORL dev people, with synthetic DCGAN distractors in the gallery.

    python -m bench.accuracy [--distractors 0,100,1000,10000] [--enrolled 1,3] [--detector cascade] [--publish]

Protocol: s1..s10 are enrolled with their first 1 (or 3) photos; their other photos
are mated probes; every photo of s11..s20 is a non-mated probe (never enrolled).
Distractors are DCGAN synthetic faces (64x64, upscaled to 256 and padded), each its
own identity in the gallery. Every face goes through the service's own code:
decode, detect (the service's detector, `--detector`: by default the cascade), ArcFace-template
align; the same 112x112 crops are embedded
by SFace (the service default, via the service's embedder) and by the peer
(InsightFace MobileFaceNet, w600k_mbf, from the shared assets).

Reported: rank-1 (mated), DIR and FPIR at the default threshold (SFace: the
manifest's 0.40; MBF: the threshold with the same 1:1 impostor FAR as SFace's on the
ORL s1-s10 pairs, never on the strangers s11-s20 that measure it), FNIR and DIR at
FPIR 1% and 5%, and DET curves (FNIR against FPIR).
With 100 non-mated probes, FPIR moves in steps of 1%.
Distractor embeddings are cached in bench/out so reruns are quick.
Writes bench/out/accuracy.json, accuracy_det_{1,3}.png (DET) and accuracy_scores_{1,3}.png
(top-1 score histograms with the threshold, at the largest distractor count).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from bench.common import (
    ORL,
    OUT,
    add_detector_argument,
    detector_named,
    machine,
    report_written,
    shared_asset,
    write_json,
)
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import Detector, largest_face
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_embedder_model
from training.metrics import SearchResults, det_curve, search, search_metrics, threshold_at_rate
from training.plots import save_figure

ENROLLED = range(1, 11)
NEVER_ENROLLED = range(11, 21)
PHOTOS = range(1, 11)
FPIRS = (0.01, 0.05)
LATENT = 100
DISTRACTOR_SIZE = 256


class _Embedder(Protocol):
    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]: ...


def orl_crops(detector: Detector) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int64]]:
    """Aligned crops of every ORL dev photo (N, 112, 112, 3), with person and photo number."""
    crops, people, photos = [], [], []
    for person in [*ENROLLED, *NEVER_ENROLLED]:
        for n in PHOTOS:
            image = decode_image((ORL / f"s{person}" / f"{n}.pgm").read_bytes())
            face = largest_face(detector.detect(image))
            if face is None:
                raise RuntimeError(f"no face found in ORL s{person}/{n}.pgm")
            crops.append(align_face(image, face.landmarks))
            people.append(person)
            photos.append(n)
    return np.stack(crops), np.array(people, np.int64), np.array(photos, np.int64)


def _draw_faces(weights: Path) -> Callable[[NDArray[np.float32]], NDArray[np.uint8]]:
    """(N, 100) latents -> (N, 64, 64, 3) RGB faces, with training's generator class where it exists."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=False)["netG_state_dict"]
    generator: Any
    try:
        from training.data.synthetic import DCGANGenerator

        generator = DCGANGenerator()
    except ImportError:  # training's generator is not there: the same layers, built here
        from torch import nn

        def up(cin: int, cout: int, stride: int, pad: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        generator = nn.Module()
        generator.main = nn.Sequential(  # the names match the state dict's `main.N.*`
            *up(LATENT, 512, 1, 0), *up(512, 256, 2, 1), *up(256, 128, 2, 1), *up(128, 64, 2, 1),
            nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh(),
        )  # fmt: skip
    generator.load_state_dict(state)
    generator.eval()

    @torch.inference_mode()
    def draw(latents: NDArray[np.float32]) -> NDArray[np.uint8]:
        out = generator.main(torch.from_numpy(latents)[:, :, None, None])  # (N, 3, 64, 64) in [-1, 1]
        return ((out.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)

    return draw


def distractor_crops(count: int, detector: Detector, weights: Path, seed: int = 0, start: int = 0) -> NDArray[np.uint8]:
    """`count` aligned crops of synthetic faces: upscaled to 256, padded by 64 on grey, detected, aligned.

    A draw in which no face is found is skipped; the latents are a fixed stream, so
    the first k crops are the same for every count >= k.
    """
    draw = _draw_faces(weights)
    rng = np.random.default_rng(seed)
    crops: list[NDArray[np.uint8]] = []
    drawn = 0
    while len(crops) < start + count:
        latents = rng.standard_normal((256, LATENT), dtype=np.float32)
        for face in draw(latents):
            drawn += 1
            big = cv2.resize(face, (DISTRACTOR_SIZE, DISTRACTOR_SIZE), interpolation=cv2.INTER_CUBIC)
            image = cv2.copyMakeBorder(big, 64, 64, 64, 64, cv2.BORDER_CONSTANT, value=(128, 128, 128))
            found = largest_face(detector.detect(image))
            if found is not None:
                crops.append(align_face(image, found.landmarks))
            if len(crops) == start + count:
                break
    return np.stack(crops[start:]) if count else np.zeros((0, 112, 112, 3), np.uint8)


def embed_batches(embedder: _Embedder, crops: NDArray[np.uint8], batch: int = 64) -> NDArray[np.float32]:
    if len(crops) == 0:
        return np.zeros((0, 0), np.float32)
    return np.concatenate([embedder.embed(list(crops[i : i + batch])) for i in range(0, len(crops), batch)])


def cached_distractors(
    count: int, detector: Detector, embedders: dict[str, _Embedder], weights: Path | None, cache: Path
) -> dict[str, NDArray[np.float32]]:
    """Distractor embeddings per model, extended and cached in `cache` (an .npz) as needed."""
    have: dict[str, NDArray[np.float32]] = {}
    if cache.exists():
        with np.load(cache) as stored:
            have = {k: stored[k] for k in stored.files}
    known = min((len(have[m]) for m in embedders if m in have), default=0) if all(m in have for m in embedders) else 0
    if known < count:
        if weights is None:
            raise FileNotFoundError("distractors need the DCGAN weights (shared assets synthetic/)")
        crops = distractor_crops(count - known, detector, weights, start=known)
        for name, embedder in embedders.items():
            fresh = embed_batches(embedder, crops)
            have[name] = np.concatenate([have[name][:known], fresh]) if known else fresh
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **have)  # type: ignore[arg-type]
    return {m: have[m][:count] if m in have else np.zeros((0, 0), np.float32) for m in embedders}


def impostor_scores(embeddings: NDArray[np.float32], people: NDArray[np.int64]) -> NDArray[np.float64]:
    sims = embeddings @ embeddings.T
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    return sims[upper & (people[:, None] != people[None, :])].astype(np.float64)


def at_threshold(results: SearchResults, threshold: float) -> dict[str, float]:
    """DIR (mated, right identity on top, at or above the threshold) and FPIR, deciding as the service does (>=)."""
    mated = results.mated
    dir_ = np.mean(results.top1_correct[mated] & (results.top1_score[mated] >= threshold))
    fpir = np.mean(results.top1_score[~mated] >= threshold)
    return {"threshold": round(threshold, 4), "dir": round(float(dir_), 4), "fpir": round(float(fpir), 4)}


def evaluate(
    embeddings: NDArray[np.float32],
    people: NDArray[np.int64],
    photos: NDArray[np.int64],
    distractors: NDArray[np.float32],
    enrolled_photos: int,
    threshold: float,
) -> tuple[dict[str, Any], SearchResults]:
    gallery = np.isin(people, list(ENROLLED)) & (photos <= enrolled_photos)
    probes = ~gallery
    results = search(embeddings[gallery], people[gallery], embeddings[probes], people[probes], distractors=distractors)
    metrics = search_metrics(results, fpirs=FPIRS)
    metrics["at_default_threshold"] = at_threshold(results, threshold)
    return metrics, results


def plot_dets(curves: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]], path: Path, title: str) -> Path:
    from training.plots import plot_det

    return plot_det(curves, path, title=title, xlabel="FPIR (non-mated searches)", ylabel="FNIR (mated searches)")


def plot_scores(per_model: dict[str, tuple[SearchResults, float]], path: Path, title: str) -> Path:
    """Top-1 similarity of mated and non-mated searches per model, with its decision threshold."""
    from bench.common import figure

    fig = figure((5.0 * len(per_model), 3.8))
    axes = fig.subplots(1, len(per_model), squeeze=False)[0]
    for ax, (name, (results, threshold)) in zip(axes, per_model.items(), strict=True):
        bins = np.linspace(-0.2, 1.0, 61)
        ax.hist(results.top1_score[results.mated], bins=bins, alpha=0.6, label="mated (enrolled person)")
        ax.hist(results.top1_score[~results.mated], bins=bins, alpha=0.6, label="non-mated (stranger)")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
        ax.set_xlabel("top-1 cosine")
        ax.set_ylabel("searches")
        ax.set_title(f"{name}: {title}", fontsize="small")
        ax.legend(fontsize="x-small")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distractors", default="0,100,1000,10000")
    parser.add_argument("--enrolled", default="1,3", help="photos enrolled per person")
    parser.add_argument("--no-peer", action="store_true", help="SFace only (also implied without the shared assets)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true", help="copy the JSON and PNGs to bench/results/")
    add_detector_argument(parser)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.distractors.split(",")]
    enrolled = [int(e) for e in args.enrolled.split(",")]

    detector = detector_named(args.detector)
    manifest, model = load_embedder_model("builtin:sface")
    embedders: dict[str, _Embedder] = {"sface": OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"])}
    mbf_path = None if args.no_peer else shared_asset("peers", "w600k_mbf.onnx")
    if mbf_path is not None:
        from bench.peers import MbfEmbedder

        embedders["mbf"] = MbfEmbedder(mbf_path)

    crops, people, photos = orl_crops(detector)
    orl = {name: embed_batches(e, crops) for name, e in embedders.items()}
    # Thresholds are set on the enrolled side only (s1-s10); s11-s20 measure them (held out).
    side = np.isin(people, list(ENROLLED))
    impostors = {name: impostor_scores(v[side], people[side]) for name, v in orl.items()}
    sface_threshold = manifest.threshold.cosine
    far = float(np.mean(impostors["sface"] >= sface_threshold))
    thresholds = {"sface": sface_threshold}
    threshold_source = {"sface": "manifest"}
    if "mbf" in orl:
        found = threshold_at_rate(impostors["mbf"], far) if far > 0 else None
        thresholds["mbf"] = found[0] if found else float(impostors["mbf"].max())
        threshold_source["mbf"] = f"same ORL s1-s10 1:1 impostor FAR as SFace at {sface_threshold} ({far:.2e})"

    weights = shared_asset("synthetic", "dcgan_digiface_64px.tar")
    distractors = cached_distractors(
        max(counts), detector, embedders, weights, args.out / "cache" / f"distractors_{args.detector}.npz"
    )
    report: dict[str, Any] = {
        "machine": machine(),
        "detector": args.detector,
        "protocol": {
            "enrolled_people": list(ENROLLED),
            "never_enrolled_people": list(NEVER_ENROLLED),
            "distractors": "DCGAN synthetic faces, each its own identity",
            "one_to_one_impostor_pairs": len(impostors["sface"]),
            "thresholds_set_on": "ORL s1-s10 pairs only",
        },
        "thresholds": thresholds,
        "threshold_source": threshold_source,
        "results": {},
    }
    paths = []
    for k in enrolled:
        curves = {}
        largest: dict[str, tuple[SearchResults, float]] = {}
        for name, embeddings in orl.items():
            for count in counts:
                metrics, results = evaluate(embeddings, people, photos, distractors[name][:count], k, thresholds[name])
                report["results"].setdefault(name, {}).setdefault(f"enrolled_{k}", {})[str(count)] = metrics
                curves[f"{name}, {count} distractors"] = det_curve(results)
                if count == max(counts):
                    largest[name] = (results, thresholds[name])
                print(name, k, count, metrics["rank1"], metrics["at_default_threshold"], metrics["fnir_at_fpir"])
        paths.append(
            plot_scores(largest, args.out / f"accuracy_scores_{k}.png", f"{k} enrolled, {max(counts)} distractors")
        )
        paths.append(
            plot_dets(curves, args.out / f"accuracy_det_{k}.png", f"ORL open-set, {k} photo(s) enrolled per person")
        )
    json_path = write_json(args.out / "accuracy.json", report)
    report_written(json_path, *paths, publish_results=args.publish)
    return report


if __name__ == "__main__":
    main()
