"""What every benchmark shares: where the peers live, the machine it ran on, timing and output.

The peers (InsightFace weights, non-commercial) and the DCGAN generator are read
from the shared assets folder at bench time and never copied into the repository:
`$FACEID_SHARED`, else `../shared` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.vision.detect import Detector
from service.vision.manifest import ImpostorTail, ModelManifest

if TYPE_CHECKING:
    from service.vision.embed import OnnxEmbedder

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
RESULTS = REPO / "bench" / "results"
FACE_640 = REPO / "bench" / "face_640x480.jpg"
ORL = REPO / "tests" / "fixtures" / "orl"
SHARED_ENV = "FACEID_SHARED"
# Held out: these people measure thresholds and never set them (ORL s1-s10 calibrate).
ORL_STRANGERS = tuple(f"orl:s{i}" for i in range(11, 21))


def shared_dir() -> Path | None:
    """The shared assets folder, or None when this machine has none."""
    env = os.environ.get(SHARED_ENV)
    candidates = [Path(env)] if env else [REPO.parent / "shared"]
    for c in candidates:
        if (c / "assets").is_dir():
            return c
    return None


def shared_asset(*parts: str) -> Path | None:
    root = shared_dir()
    if root is None:
        return None
    path = root.joinpath("assets", *parts)
    return path if path.exists() else None


def blas_threads(count: int | None = None) -> int | None:
    """Set (when `count` is given) and return numpy's OpenBLAS thread count, or None where it is
    not numpy's bundled OpenBLAS (then the environment's OPENBLAS_NUM_THREADS decides)."""
    import ctypes
    import glob

    libs = glob.glob(str(Path(np.__file__).parent.parent / "numpy.libs" / "libscipy_openblas*.so"))
    if not libs:
        return None
    blas = ctypes.CDLL(libs[0])
    try:
        if count is not None:
            blas.scipy_openblas_set_num_threads64_(ctypes.c_int(count))
        return int(blas.scipy_openblas_get_num_threads64_())
    except AttributeError:
        return None


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine() -> dict[str, Any]:
    """What the figures were measured on, and under which load."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1_5_15": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def time_call(fn: Callable[[], object], *, repeat: int, warmup: int = 2) -> dict[str, float]:
    """Wall time of `fn` in ms (median, p90, mean, min over `repeat` calls after `warmup`),
    and this process's CPU time per call (all threads): on a shared machine the wall
    time grows with other people's load, the CPU time much less."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeat)
    cpu = np.empty(repeat)
    for i in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - t0
        cpu[i] = time.process_time() - c0
    ms = samples * 1000.0
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "cpu_median_ms": round(float(np.median(cpu) * 1000.0), 3),
        "n": repeat,
    }


def rss_bytes() -> int:
    """Resident set size of this process (Linux), 0 where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def figure(size: tuple[float, float] = (7.0, 4.5)) -> Any:
    """A bare matplotlib Figure (Agg, no pyplot state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=100)


def report_written(*paths: Path, publish_results: bool) -> None:
    """Say where a benchmark's report and plots are, and with --publish copy them to bench/results/."""
    print(*paths)
    if publish_results:
        publish(*paths)


def publish(*paths: Path) -> list[Path]:
    """Copy finished reports and plots to bench/results/ (committed; keep them small)."""
    import shutil

    RESULTS.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, RESULTS / p.name)) for p in paths]


def calibration_people(manifest: ModelManifest) -> set[str]:
    """Everyone whose photos set the manifest's 1:1 threshold or its impostor record."""
    people = set(manifest.threshold.people)
    if manifest.impostors is not None:
        people |= set(manifest.impostors.people)
    return people


def check_held_out(manifest: ModelManifest, evaluators: Iterable[str]) -> None:
    """Refuse to measure a threshold on people who set it, or on a record that does not say who did."""
    people = calibration_people(manifest)
    if not people:
        raise ValueError(f"{manifest.model_id}: the manifest does not say which people calibrated it")
    shared = people & set(evaluators)
    if shared:
        raise ValueError(f"{manifest.model_id} was calibrated on {sorted(shared)}, who also evaluate it")


def held_out_sface(evaluators: Iterable[str]) -> tuple[OnnxEmbedder, ImpostorTail]:
    """The built-in SFace on CPU and its impostor record, refused when the record is missing or
    when any of `evaluators` helped calibrate it."""
    from service.vision.embed import OnnxEmbedder
    from service.vision.models import load_embedder_model

    manifest, model = load_embedder_model("builtin:sface")
    if manifest.impostors is None:
        raise SystemExit("the SFace manifest has no impostor record; run `faceid-train calibrate` first")
    check_held_out(manifest, evaluators)
    return OnnxEmbedder(manifest, model, providers=["CPUExecutionProvider"]), manifest.impostors


def add_detector_argument(parser: argparse.ArgumentParser) -> None:
    """`--detector`, by default the service's own (FACEID_DETECTOR's default): a figure about the
    service should see faces aligned as the service aligns them."""
    from service.settings import Settings
    from service.vision.detectors import DETECTOR_KINDS

    default = Settings.model_fields["detector"].default
    parser.add_argument(
        "--detector", choices=DETECTOR_KINDS, default=default, help=f"face detector (default: the service's, {default})"
    )


def detector_named(kind: str) -> Detector:
    from service.vision.detectors import build_detector

    return build_detector(kind)  # type: ignore[arg-type]
