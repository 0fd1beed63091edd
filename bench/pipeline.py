"""The bare in-process pipeline, stage by stage, against the peers, in the same run.

    python -m bench.pipeline [--rounds 5] [--repeat 100] [--publish]

Service: decode (Pillow) -> detect (on a copy scaled to 640) with the service's default
detector (the RetinaFace + YuNet cascade), and with YuNet alone -> ArcFace-template align
(from full resolution) -> SFace embed. Peer: the same decode and align around
InsightFace's SCRFD-0.5GF and MobileFaceNet (w600k_mbf), read from the shared assets.
No HTTP, no database. Runs on the 640x480 one-face photo and on a 12-megapixel
phone-sized JPEG made from it at bench time (kept in bench/out, out of git).
Also times what the 12 MP photo would cost with reduced-scale JPEG decoding, and
embedding latency per face at batch 1 and batch 8.

Honest timing: the pipelines and images are measured interleaved over `--rounds` rounds of
`--repeat` calls each, so that all see the same machine load. Every figure is the median of
the per-round medians with their spread (min-max over rounds); the service-over-peer ratio
is taken round by round, and a comparison counts as clear only when its whole spread is on
one side of 1.
Writes bench/out/pipeline.json and bench/out/pipeline.png.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from bench.common import FACE_640, OUT, machine, report_written, shared_asset, time_call, write_json
from service.settings import Settings
from service.vision.align import align_face
from service.vision.decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from service.vision.detect import DetectorOptions, Face, YuNetDetector
from service.vision.detectors import build_detector
from service.vision.embed import OnnxEmbedder
from service.vision.models import load_detector_model, load_embedder_model
from service.vision.pipeline import FacePipeline
from training.plots import save_figure

STAGES = ("decode", "detect", "align", "embed")


class _Detector(Protocol):
    def detect(self, image: NDArray[np.uint8]) -> list[Face]: ...


class _Embedder(Protocol):
    def embed(self, crops: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class Pipeline:
    name: str
    detector: _Detector
    embedder: _Embedder
    crop_size: tuple[int, int] = (112, 112)
    service_path: bool = False  # the service's own FacePipeline: reduced-scale decode for large JPEGs

    def run(self, data: bytes, *, draft_max_side: int | None = None) -> NDArray[np.float32]:
        if self.service_path and draft_max_side is None:
            pipeline = FacePipeline(self.detector)  # type: ignore[arg-type]
            decoded, found = pipeline.find(data)
            return self.embedder.embed(pipeline.crops([(decoded, f) for f in found], self.crop_size))
        image = decode_image(data, DEFAULT_MAX_PIXELS, draft_max_side=draft_max_side)
        faces = self.detector.detect(image)
        crops = [align_face(image, f.landmarks, self.crop_size) for f in faces]
        return self.embedder.embed(crops)


def phone_photo(path: Path, size: tuple[int, int] = (4000, 3000), source: Path = FACE_640) -> Path:
    """A phone-sized JPEG: the one-face photo upscaled, with sensor-like noise so it compresses like a real one."""
    if path.exists():
        found = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if found is not None and (found.shape[1] * 8 >= size[0] - 8 and found.shape[1] * 8 <= size[0] + 8):
            return path
    bgr = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(source)
    big = np.asarray(cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC), np.float32)
    big += np.random.default_rng(0).normal(0.0, 4.0, big.shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.clip(big, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def stage_times(pipeline: Pipeline, data: bytes, repeat: int) -> dict[str, Any]:
    """Each stage timed on its own (same inputs every call), then the whole pipeline end to end."""
    if pipeline.service_path:  # the service detects on the reduced-scale decode (service.vision.pipeline)
        decoded = DecodedImage(data, DEFAULT_MAX_PIXELS, reduced_side=640)
        image = decoded.reduced
        decode: Callable[[], object] = lambda: DecodedImage(data, DEFAULT_MAX_PIXELS, reduced_side=640)  # noqa: E731
    else:
        image = decode_image(data, DEFAULT_MAX_PIXELS)
        decode = lambda: decode_image(data, DEFAULT_MAX_PIXELS)  # noqa: E731
    faces = pipeline.detector.detect(image)
    crops = [align_face(image, f.landmarks, pipeline.crop_size) for f in faces]
    calls: dict[str, Callable[[], object]] = {
        "decode": decode,
        "detect": lambda: pipeline.detector.detect(image),
        "align": lambda: [align_face(image, f.landmarks, pipeline.crop_size) for f in faces],
        "embed": lambda: pipeline.embedder.embed(crops),
    }
    stages = {name: time_call(fn, repeat=repeat) for name, fn in calls.items()}
    total = time_call(lambda: pipeline.run(data), repeat=repeat)
    return {
        "faces": len(faces),
        "stages": stages,
        "sum_of_stage_medians_ms": round(sum(s["median_ms"] for s in stages.values()), 2),
        "end_to_end": total,
    }


def embed_latency(embedder: _Embedder, crop: NDArray[np.uint8], repeat: int) -> dict[str, float]:
    one = time_call(lambda: embedder.embed([crop]), repeat=repeat)
    eight = time_call(lambda: embedder.embed([crop] * 8), repeat=max(3, repeat // 4))
    return {"batch1_ms_per_face": one["median_ms"], "batch8_ms_per_face": round(eight["median_ms"] / 8, 3)}


def reduced_decode(pipeline: Pipeline, data: bytes, full: NDArray[np.float32], repeat: int) -> dict[str, Any]:
    """What-if: decode the JPEG with DCT scaling (about 2x the detector's side) and align from that."""
    draft = pipeline.run(data, draft_max_side=640)
    cos = float(np.sum(draft[0] * full[0])) if len(draft) and len(full) else None
    return {
        "decode_ms": time_call(lambda: decode_image(data, DEFAULT_MAX_PIXELS, draft_max_side=640), repeat=repeat)[
            "median_ms"
        ],
        "end_to_end": time_call(lambda: pipeline.run(data, draft_max_side=640), repeat=repeat),
        "cosine_to_full_resolution_embedding": None if cos is None else round(cos, 4),
    }


def plot(report: dict[str, Any], path: Path) -> Path:
    from bench.common import figure

    fig = figure((8.0, 4.5))
    ax = fig.subplots()
    labels, bottoms = [], []
    rows = [(p, img, r) for p, per_image in report["pipelines"].items() for img, r in per_image.items()]
    colours = {"decode": "#4c72b0", "detect": "#dd8452", "align": "#55a868", "embed": "#c44e52"}
    bottoms = [0.0] * len(rows)
    for stage in STAGES:
        heights = [r["stages"][stage]["median_ms"] for _, _, r in rows]
        ax.bar(range(len(rows)), heights, bottom=bottoms, label=stage, color=colours[stage])
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    labels = [f"{p}\n{img}" for p, img, _ in rows]
    for i, (_, _, r) in enumerate(rows):
        e2e = r["end_to_end"]
        low, high = e2e.get("spread_ms", [e2e["median_ms"]] * 2)
        ax.text(
            i, bottoms[i], f"{e2e['median_ms']:.0f} ms\n({low:.0f}-{high:.0f})", ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("median ms per image (stage by stage)")
    ax.set_title(
        f"In-process pipeline, {report['machine']['cores']} CPU cores, {report.get('rounds', 1)} interleaved rounds;"
        "\nlabel: end-to-end median (spread over rounds)",
        fontsize=9,
    )
    ax.margins(y=0.15)
    ax.legend()
    return save_figure(fig, path)


def build_pipelines(threads: int, *, peers: bool = True) -> list[Pipeline]:
    """The service as configured by default (its detector setting), the service with YuNet alone
    (the detector before issue 11), then the peer when its models are at hand."""
    manifest, model = load_embedder_model("builtin:sface")

    def sface() -> OnnxEmbedder:
        return OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"], intra_op_threads=threads)

    default = Settings.model_fields["detector"].default
    pipelines = [
        Pipeline(
            f"service ({default} + SFace)",
            build_detector(default),
            sface(),
            manifest.preprocess.size,
            service_path=True,
        ),
        Pipeline(
            "service (YuNet + SFace)",
            YuNetDetector(load_detector_model(), DetectorOptions()),
            sface(),
            manifest.preprocess.size,
            service_path=True,
        ),
    ]
    scrfd, mbf = shared_asset("peers", "scrfd_500m_bnkps.onnx"), shared_asset("peers", "w600k_mbf.onnx")
    if peers and scrfd is not None and mbf is not None:
        from bench.peers import MbfEmbedder, ScrfdDetector

        pipelines.append(
            Pipeline("peer (SCRFD + MBF)", ScrfdDetector(scrfd, threads=threads), MbfEmbedder(mbf, threads=threads))
        )
    return pipelines


def _over_rounds(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median_ms": round(float(np.median(values)), 3),
        "spread_ms": [round(min(values), 3), round(max(values), 3)],
        "per_round_ms": [round(v, 3) for v in values],
    }


def _ratio(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    low, high = min(ratios), max(ratios)
    return {
        "median": round(float(np.median(ratios)), 3),
        "spread": [round(low, 3), round(high, 3)],
        "clear": high < 1.0 or low > 1.0,  # the whole spread on one side of parity
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a claim)")
    parser.add_argument(
        "--repeat", type=int, default=100, help="timed calls per measurement per round (after 2 warm-up)"
    )
    parser.add_argument("--phone-size", default="4000x3000", help="WxH of the generated phone-sized JPEG")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--publish", action="store_true", help="copy the JSON and PNG to bench/results/")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    w, h = (int(v) for v in args.phone_size.split("x"))
    big_label = f"{w}x{h}"
    images = {"640x480": FACE_640, big_label: phone_photo(args.out / f"face_{w}x{h}.jpg", (w, h))}
    datas = {label: path.read_bytes() for label, path in images.items()}
    pipelines = build_pipelines(args.threads)
    crops = {}
    for pipeline in pipelines:
        image = decode_image(datas["640x480"])
        crops[pipeline.name] = align_face(image, pipeline.detector.detect(image)[0].landmarks, pipeline.crop_size)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {p.name: {label: [] for label in images} for p in pipelines}
    embeds: dict[str, list[dict[str, float]]] = {p.name: [] for p in pipelines}
    with tqdm(total=args.rounds * len(pipelines), desc="pipeline rounds", unit="pipeline") as bar:
        for _ in range(args.rounds):
            for pipeline in pipelines:
                for label in images:
                    rounds[pipeline.name][label].append(stage_times(pipeline, datas[label], args.repeat))
                embeds[pipeline.name].append(embed_latency(pipeline.embedder, crops[pipeline.name], args.repeat))
                bar.update()
    report: dict[str, Any] = {
        "machine": machine(),
        "rounds": args.rounds,
        "repeat": args.repeat,
        "method": "pipelines and images interleaved round by round; figures are medians of per-round medians",
        "images": {k: {"path": str(p.name), "bytes": p.stat().st_size} for k, p in images.items()},
        "pipelines": {},
        "embed_per_face": {},
        "reduced_scale_decode": {},
    }
    for pipeline in pipelines:
        per_image = report["pipelines"][pipeline.name] = {}
        for label in images:
            got = rounds[pipeline.name][label]
            per_image[label] = {
                "faces": got[0]["faces"],
                "stages": {stage: _over_rounds([r["stages"][stage]["median_ms"] for r in got]) for stage in STAGES},
                "end_to_end": _over_rounds([r["end_to_end"]["median_ms"] for r in got]),
                "end_to_end_cpu_ms": round(float(np.median([r["end_to_end"]["cpu_median_ms"] for r in got])), 3),
            }
            print(pipeline.name, label, per_image[label]["end_to_end"]["median_ms"], "ms", flush=True)
        report["embed_per_face"][pipeline.name] = {
            key: _over_rounds([e[key] for e in embeds[pipeline.name]])["median_ms"]
            for key in ("batch1_ms_per_face", "batch8_ms_per_face")
        } | {"batch1_spread_ms": _over_rounds([e["batch1_ms_per_face"] for e in embeds[pipeline.name]])["spread_ms"]}
        big = datas[big_label]
        report["reduced_scale_decode"][pipeline.name] = reduced_decode(
            pipeline, big, pipeline.run(big), max(3, args.repeat // 4)
        )
    names = [p.name for p in pipelines]
    service_rounds = rounds[names[0]]
    report["ratio_12mp_to_640"] = _ratio(
        [r["end_to_end"]["median_ms"] for r in service_rounds[big_label]],
        [r["end_to_end"]["median_ms"] for r in service_rounds["640x480"]],
    )
    peer = next((n for n in names if n.startswith("peer")), None)
    if peer is not None:
        report["service_over_peer"] = {
            label: _ratio(
                [r["end_to_end"]["median_ms"] for r in service_rounds[label]],
                [r["end_to_end"]["median_ms"] for r in rounds[peer][label]],
            )
            for label in images
        }
    report["machine"]["load_average_after"] = machine()["load_average_1_5_15"]
    json_path = write_json(args.out / "pipeline.json", report)
    png_path = plot(report, args.out / "pipeline.png")
    report_written(json_path, png_path, publish_results=args.publish)
    return report


if __name__ == "__main__":
    main()
