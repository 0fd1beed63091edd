"""`faceid-train export`: a trained backbone -> ONNX file + manifest the service loads.

Steps, each a hard failure when it does not hold:

1. export with a dynamic batch axis (opset 17 or later);
2. parity: the cosine between PyTorch's and ONNX Runtime's embedding of the same
   input is at least 0.9999 for real crops and for random inputs, at batch 1 and
   at a larger batch;
3. the model runs through the service's own `OnnxEmbedder` (the code that will
   serve it);
4. a default threshold is calibrated at a target FAR on held-out pairs, and the
   FAR measured there is recorded; with 1000 or more impostor pairs their
   distribution goes into the manifest's `impostors` too (the service's
   gallery-aware threshold needs it; `faceid-train calibrate` can add it later);
5. the manifest (preprocessing, size, embedding size, name, version, sha256) is
   written and read back by the service's loader.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from service.threshold import fit_impostor_tail
from service.vision.manifest import ImpostorTail, ModelManifest, Preprocess, Threshold, sha256_file
from training.data.transforms import CROP_SIZE, INPUT_MEAN, INPUT_STD, crop_to_tensor
from training.embedders import embed_all, l2_normalize
from training.metrics import rate_key, threshold_at_rate

MIN_OPSET = 17
PARITY_MIN_COSINE = 0.9999
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
MIN_IMPOSTOR_SCORES = 1000  # fewer cannot support a tail fit (`service.threshold.fit_impostor_tail`)


class ExportError(RuntimeError):
    """The exported model does not match PyTorch, or cannot be calibrated as asked."""


def export_onnx(model: torch.nn.Module, path: Path, *, opset: int = MIN_OPSET) -> None:
    """Write `model` (B, 3, 112, 112) -> (B, D) as ONNX with a dynamic batch axis."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is below the supported minimum {MIN_OPSET}")
    model = model.eval()
    example = torch.zeros(2, 3, CROP_SIZE, CROP_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter needs no extra package (the dynamo one needs onnxscript)
        # and handles these plain CNNs exactly; its deprecation notice is not actionable here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def _cosines(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(l2_normalize(a64) * l2_normalize(b64), axis=1, dtype=np.float64)


@dataclass(frozen=True)
class ParityReport:
    min_cosine_real: float
    min_cosine_random: float
    inputs_real: int
    inputs_random: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_cosine_real": self.min_cosine_real,
            "min_cosine_random": self.min_cosine_random,
            "inputs_real": self.inputs_real,
            "inputs_random": self.inputs_random,
            "required": PARITY_MIN_COSINE,
        }


def check_parity(
    model: torch.nn.Module,
    onnx_path: Path,
    real_crops: Sequence[NDArray[np.uint8]],
    *,
    random_inputs: int = 8,
    seed: int = 0,
    min_cosine: float = PARITY_MIN_COSINE,
) -> ParityReport:
    """Compare PyTorch and ONNX Runtime embeddings; raise `ExportError` below `min_cosine`.

    Real crops go in one batch and one at a time (the batch axis must really be
    dynamic); random inputs are uniform-noise crops and standard-normal tensors.
    """
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # kinder to a busy CPU
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    model = model.eval()
    rng = np.random.default_rng(seed)

    def both(x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
        return expected, session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    real = np.stack([crop_to_tensor(c).numpy() for c in real_crops]) if len(real_crops) else None
    noise = [crop_to_tensor(rng.integers(0, 256, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)).numpy()]
    noise += [rng.standard_normal((3, CROP_SIZE, CROP_SIZE)).astype(np.float32) for _ in range(random_inputs - 1)]
    random_batch = np.stack(noise).astype(np.float32)

    real_cos = [1.0]
    if real is not None:
        real_cos = list(_cosines(*both(real)))
        single_torch, single_onnx = both(real[:1])
        real_cos += list(_cosines(single_torch, single_onnx))
    random_cos = list(_cosines(*both(random_batch)))
    report = ParityReport(float(min(real_cos)), float(min(random_cos)), len(real_crops), random_inputs)
    worst = min(report.min_cosine_real, report.min_cosine_random)
    if not worst >= min_cosine:  # also catches NaN
        raise ExportError(
            f"ONNX output differs from PyTorch: min cosine {worst:.6f} "
            f"(real {report.min_cosine_real:.6f}, random {report.min_cosine_random:.6f}) < {min_cosine}"
        )
    return report


@dataclass(frozen=True)
class Calibration:
    threshold: float
    target_far: float
    measured_far: float
    tar: float
    genuine_pairs: int
    impostor_pairs: int
    source: str

    def to_threshold(self) -> Threshold:
        # `far` is the target, as for the built-in models; what was measured is in the text.
        return Threshold(
            cosine=self.threshold,
            far=self.target_far,
            calibrated_on=(
                f"{self.source}: {self.genuine_pairs} genuine + {self.impostor_pairs} impostor pairs, "
                f"measured FAR {self.measured_far:.2e}, TAR {self.tar:.4f}"
            ),
        )


def calibrate(scores: NDArray[np.floating], issame: NDArray[np.bool_], target_far: float, source: str) -> Calibration:
    """The threshold with FAR <= `target_far` on these pairs (accept when cosine > threshold)."""
    scores = np.asarray(scores, np.float64)
    issame = np.asarray(issame, bool)
    impostors, genuine = scores[~issame], scores[issame]
    found = threshold_at_rate(impostors, target_far)
    if found is None:
        raise ExportError(
            f"FAR {target_far:g} cannot be measured on {impostors.size} impostor pairs "
            f"(needs at least {int(np.ceil(1 / target_far))}); give more calibration pairs or a larger FAR"
        )
    threshold, far = found
    tar = float(np.mean(genuine > threshold)) if genuine.size else float("nan")
    return Calibration(threshold, target_far, far, tar, int(genuine.size), int(impostors.size), source)


def impostor_record(
    scores: NDArray[np.floating],
    issame: NDArray[np.bool_],
    *,
    embeddings: NDArray[np.float32] | None = None,
    labels: NDArray[np.int64] | None = None,
    source: str = "",
) -> ImpostorTail | None:
    """The impostor distribution of the calibration pairs, or None below `MIN_IMPOSTOR_SCORES` of them.

    With labelled images, `top1` also records non-mated searches: the first image of
    each identity is the gallery, and every other image is searched against the
    gallery entries of the *other* identities (gallery size: identities - 1).
    """
    impostors = np.asarray(scores, np.float64)[~np.asarray(issame, bool)]
    if impostors.size < MIN_IMPOSTOR_SCORES:
        return None
    top1, gallery_size = None, 0
    if embeddings is not None and labels is not None and len(np.unique(labels)) > 1:
        first = np.array([np.flatnonzero(labels == c)[0] for c in np.unique(labels)])
        probes = np.setdiff1d(np.arange(len(labels)), first)
        if len(probes):
            sims = embeddings[probes] @ embeddings[first].T  # (P, identities)
            sims[labels[probes][:, None] == labels[first][None, :]] = -np.inf  # leave the own identity out
            top1, gallery_size = sims.max(axis=1), len(first) - 1
    return fit_impostor_tail(impostors, top1=top1, gallery_size=gallery_size, measured_on=source)


def build_manifest(
    onnx_path: Path,
    *,
    name: str,
    version: str,
    embedding_size: int,
    threshold: Threshold,
    description: str = "",
    licence: str = "",
    extra: dict[str, Any] | None = None,
    impostors: ImpostorTail | None = None,
) -> ModelManifest:
    return ModelManifest(
        name=name,
        version=version,
        file=onnx_path.name,
        sha256=sha256_file(onnx_path),
        embedding_size=embedding_size,
        preprocess=Preprocess(
            size=(CROP_SIZE, CROP_SIZE),
            color="RGB",
            mean=(INPUT_MEAN,) * 3,
            std=(INPUT_STD,) * 3,
            layout="NCHW",
            alignment="arcface_5pt",
        ),
        threshold=threshold,
        input_name=INPUT_NAME,
        dynamic_batch=True,
        licence=licence,
        description=description,
        extra=extra or {},
        impostors=impostors,
    )


@dataclass(frozen=True)
class CalibrationSet:
    """Held-out faces to calibrate on.

    With `issame`, pairs as given: `images[2i]`, `images[2i+1]` (a `.bin`). With
    `labels`, every pair of the images: all same-label pairs are genuine and all
    others impostors, which resolves far lower FARs than sampled pairs (N images
    give N(N-1)/2 comparisons for N embeddings).
    """

    images: list[NDArray[np.uint8]]
    source: str
    issame: NDArray[np.bool_] | None = None
    labels: NDArray[np.int64] | None = None

    def scores(self, emb: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """(cosine, genuine?) of every calibration pair."""
        if self.labels is not None:
            rows, cols = np.triu_indices(len(emb), k=1)
            return np.sum(emb[rows] * emb[cols], axis=1), self.labels[rows] == self.labels[cols]
        if self.issame is None:
            raise ValueError("a calibration set needs pair truths or labels")
        return np.sum(emb[0::2] * emb[1::2], axis=1), self.issame


def export_model(
    model: torch.nn.Module,
    out_dir: Path,
    *,
    name: str,
    version: str,
    calibration: CalibrationSet | None,
    target_far: float = 1e-3,
    threshold: float | None = None,
    opset: int = MIN_OPSET,
    description: str = "",
    licence: str = "",
    extra: dict[str, Any] | None = None,
    batch_size: int = 64,
) -> ModelManifest:
    """Export, check, calibrate and write `out_dir/model.onnx` + `out_dir/manifest.json`.

    The threshold comes from `calibration` at `target_far`, or is `threshold` as
    given (recorded as uncalibrated) when there is no calibration set.
    """
    from service.vision.embed import OnnxEmbedder
    from service.vision.models import load_embedder_model

    if calibration is None and threshold is None:
        raise ValueError("give held-out pairs to calibrate the threshold on, or a threshold")
    out_dir = Path(out_dir)
    onnx_path = out_dir / "model.onnx"
    manifest_path = out_dir / "manifest.json"
    model = model.eval()
    export_onnx(model, onnx_path, opset=opset)
    real = calibration.images[:8] if calibration is not None else []
    parity = check_parity(model, onnx_path, real)
    with torch.inference_mode():
        embedding_size = int(model(torch.zeros(1, 3, CROP_SIZE, CROP_SIZE)).shape[1])

    provisional = Threshold(cosine=threshold if threshold is not None else 0.0, far=None, calibrated_on="manual")
    info = {**(extra or {}), "parity": parity.to_dict(), "opset": opset}
    manifest = build_manifest(
        onnx_path,
        name=name,
        version=version,
        embedding_size=embedding_size,
        threshold=provisional,
        description=description,
        licence=licence,
        extra=info,
    )
    # The serving code path itself: its probe run and embedding-size check happen here.
    embedder = OnnxEmbedder(manifest, onnx_path.read_bytes(), providers=("CPUExecutionProvider",))
    if calibration is not None:
        emb = embed_all(embedder, calibration.images, batch_size=batch_size)
        scores, issame = calibration.scores(emb)
        found = calibrate(scores, issame, target_far, calibration.source)
        info["calibration"] = {
            "target_far": target_far,
            "measured_far": found.measured_far,
            "tar": found.tar,
            "genuine_pairs": found.genuine_pairs,
            "impostor_pairs": found.impostor_pairs,
            "source": found.source,
            "far_key": rate_key(target_far),
        }
        impostors = impostor_record(
            scores,
            issame,
            embeddings=emb,
            labels=calibration.labels,
            source=f"{calibration.source}: {found.impostor_pairs} impostor pairs",
        )
        manifest = build_manifest(
            onnx_path,
            name=name,
            version=version,
            embedding_size=embedding_size,
            threshold=found.to_threshold(),
            description=description,
            licence=licence,
            extra=info,
            impostors=impostors,
        )
    manifest.save(manifest_path)
    loaded, _ = load_embedder_model(str(manifest_path))  # parses strictly and verifies the sha256
    if loaded != manifest:
        raise ExportError("the manifest read back differs from the one written")
    return loaded


def load_calibration(
    bin_path: Path | None, folder: Path | None, *, max_images: int = 4000, seed: int = 0
) -> CalibrationSet | None:
    """A `.bin` (its pairs) or an aligned folder (all pairs of up to `max_images` images, drawn by `seed`)."""
    if bin_path is not None:
        from training.data.verification_bin import load_bin

        found = load_bin(bin_path)
        return CalibrationSet(found.images, source=bin_path.name, issame=found.issame)
    if folder is not None:
        from training.data.folder import read_crop, scan_folder

        _, samples = scan_folder(folder)
        if len(samples) > max_images:
            chosen = np.sort(np.random.default_rng(seed).choice(len(samples), max_images, replace=False))
            samples = [samples[int(i)] for i in chosen]
        labels = np.array([c for _, c in samples], dtype=np.int64)
        images = [read_crop(p) for p, _ in samples]
        return CalibrationSet(images, source=f"{folder.name}, all pairs of {len(images)} images", labels=labels)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (config + backbone state dict)")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.onnx and manifest.json")
    parser.add_argument("--name", help="model name (default: the run name in the checkpoint's config)")
    parser.add_argument("--version", help="model version (default: the checkpoint file's stem)")
    calib = parser.add_mutually_exclusive_group(required=True)
    calib.add_argument("--calibrate-bin", type=Path, help="held-out .bin pairs to calibrate the threshold on")
    calib.add_argument("--calibrate-folder", type=Path, help="held-out aligned folder (all its pairs are compared)")
    calib.add_argument("--threshold", type=float, help="use this cosine threshold as is (not calibrated)")
    parser.add_argument("--far", type=float, default=1e-3, help="target false accept rate (default 1e-3)")
    parser.add_argument(
        "--max-images", type=int, default=4000, help="images drawn from --calibrate-folder (default 4000: 8M pairs)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opset", type=int, default=MIN_OPSET)
    parser.add_argument("--description", default="")
    parser.add_argument("--licence", default="", help="licence of the weights (depends on the training data)")


def main(args: argparse.Namespace) -> int:
    from training.embedders import load_checkpoint

    model, cfg = load_checkpoint(args.checkpoint)
    calibration = load_calibration(
        args.calibrate_bin, args.calibrate_folder, max_images=args.max_images, seed=args.seed
    )
    manifest = export_model(
        model,
        args.out,
        name=args.name or cfg.run.name,
        version=args.version or args.checkpoint.stem,
        calibration=calibration,
        target_far=args.far,
        threshold=args.threshold,
        opset=args.opset,
        description=args.description or f"{cfg.backbone.name}, {cfg.backbone.embedding_size}-d, {cfg.head.name} head",
        licence=args.licence,
        extra={"backbone": cfg.backbone.name, "head": cfg.head.name, "checkpoint": args.checkpoint.name},
    )
    summary: dict[str, Any] = {"manifest": str(args.out / "manifest.json"), "threshold": manifest.threshold.cosine}
    if manifest.impostors is not None:
        summary["impostors"] = manifest.impostors.measured_on
    else:
        summary["impostors"] = None
        if "calibration" in manifest.extra:
            pairs = manifest.extra["calibration"]["impostor_pairs"]
            why = f"{pairs} impostor pairs, {MIN_IMPOSTOR_SCORES} needed; calibrate on a larger held-out set"
        else:
            why = "no held-out set (--threshold)"
        summary["impostors_note"] = f"not recorded: {why}, or run `faceid-train calibrate`"
    print(json.dumps(summary))
    return 0
