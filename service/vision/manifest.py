"""The contract between a model file and the code that runs it.

A manifest is a JSON file next to an ONNX file. It declares everything the service
needs to run the model: preprocessing, input size, embedding size, a calibrated
default threshold, and the sha256 of the model file. `training export` writes the
same format. Nothing about preprocessing is guessed; unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from service.errors import ModelError

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Preprocess:
    """How an aligned crop becomes the model's input tensor.

    `input = (pixel - mean) / std` per channel, pixels in 0..255, in `color` order.
    """

    size: tuple[int, int] = (112, 112)  # (width, height) of the aligned crop
    color: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    alignment: Literal["arcface_5pt"] = "arcface_5pt"


@dataclass(frozen=True)
class Threshold:
    """A default cosine threshold and how it was chosen."""

    cosine: float
    far: float | None = None  # the 1:1 false accept rate it was calibrated at
    calibrated_on: str = ""
    people: list[str] = field(default_factory=list)  # who calibrated it, e.g. "orl:s3", "dcgan:1001"


@dataclass(frozen=True)
class ImpostorTail:
    """The model's impostor (different-person) cosine distribution, for open-set thresholds.

    `quantiles` maps an exceedance probability p (as a string, e.g. "1e-03") to the
    cosine s with P(one impostor comparison > s) = p, as far as the sample supports.
    `pair_tail` is a generalised Pareto fit of the rare end beyond `start`:
    P(cos > s) = p0 * (1 + xi (s - start) / sigma)^(-1/xi). `top1` holds quantiles of the best
    score of non-mated searches against a gallery of `gallery_size` identities, as
    measured (for reports and checks). See `service.threshold`.

    `grid` with `counts` and `real_counts` (optional) are exceedance counts: how many of
    the `pair_tail["n"]` pairs the tail was fitted on, and how many of the `real_pairs`
    real-against-real pairs, score at or above each cosine of the grid. They give the
    confidence bounds and the measured synthetic-to-real gap. `people` names everyone the
    record was measured on ("orl:s1", "dcgan:1001" for a DCGAN seed), so that a check can
    keep them apart from the people that evaluate it.
    """

    gallery_size: int
    quantiles: dict[str, float]
    pair_tail: dict[str, float] = field(default_factory=dict)
    top1: dict[str, float] = field(default_factory=dict)
    measured_on: str = ""
    grid: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    real_counts: list[int] = field(default_factory=list)
    real_pairs: int = 0
    people: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    file: str  # ONNX file, relative to the manifest's folder (or package for built-ins)
    sha256: str
    embedding_size: int
    preprocess: Preprocess
    threshold: Threshold
    input_name: str | None = None
    dynamic_batch: bool = True
    licence: str = ""
    description: str = ""
    impostors: ImpostorTail | None = None
    format: int = MANIFEST_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """What every stored embedding records: embeddings of another model are not comparable."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["preprocess"]["size"] = list(self.preprocess.size)
        if data["impostors"] is None:
            del data["impostors"]
        return data

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


def _strict(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelError(f"manifest {where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ModelError(f"manifest {where}: unknown keys {sorted(unknown)}")
    return dict(data)


def manifest_from_dict(data: dict[str, Any]) -> ModelManifest:
    """Build a manifest from parsed JSON, rejecting unknown or missing keys."""
    top = _strict(ModelManifest, data, "")
    try:
        pre = _strict(Preprocess, top.pop("preprocess"), "preprocess")
        if "size" in pre:
            pre["size"] = tuple(int(v) for v in pre["size"])
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(float(v) for v in pre[key])
        preprocess = Preprocess(**pre)
        threshold = Threshold(**_strict(Threshold, top.pop("threshold"), "threshold"))
        impostors_raw = top.pop("impostors", None)
        impostors = (
            ImpostorTail(**_strict(ImpostorTail, impostors_raw, "impostors")) if impostors_raw is not None else None
        )
        manifest = ModelManifest(preprocess=preprocess, threshold=threshold, impostors=impostors, **top)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"manifest is incomplete or malformed: {exc}") from exc
    if manifest.format != MANIFEST_FORMAT:
        raise ModelError(f"manifest format {manifest.format} is not supported (expected {MANIFEST_FORMAT})")
    if len(manifest.preprocess.mean) != 3 or len(manifest.preprocess.std) != 3 or 0 in manifest.preprocess.std:
        raise ModelError("manifest preprocess: mean and std need three values and std may not be 0")
    if manifest.embedding_size <= 0:
        raise ModelError("manifest embedding_size must be positive")
    return manifest


def load_manifest(path: Path) -> ModelManifest:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"manifest not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"manifest {path} is not valid JSON: {exc}") from exc
    return manifest_from_dict(data)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """Read a model file and check its sha256 before anything runs it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"model file not found: {path}") from exc
    actual = sha256_bytes(data)
    if actual != expected_sha256.lower():
        raise ModelError(f"model file {path} has sha256 {actual}, expected {expected_sha256}")
    return data
