"""A folder of aligned 112x112 crops, one sub-folder per identity (what `prepare` and `synth` write)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from training.data.images import decode_rgb
from training.data.transforms import CROP_SIZE, crop_to_tensor, random_flip
from training.data.verification_bin import PairSet

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm"})


def scan_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(identity names in sorted order, [(image path, label)]); hidden entries are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                samples.append((path, label))
    return classes, samples


def read_crop(path: Path) -> NDArray[np.uint8]:
    rgb = decode_rgb(Path(path).read_bytes())
    if rgb.shape[:2] != (CROP_SIZE, CROP_SIZE):
        raise ValueError(f"{path}: expected an aligned {CROP_SIZE}x{CROP_SIZE} crop, got {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


class FolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """`root/<identity>/<image>` as (3, 112, 112) tensors in [-1, 1] and int labels (sorted names)."""

    def __init__(self, root: Path, *, flip: bool = False) -> None:
        self.root = Path(root)
        self.classes, self.samples = scan_folder(self.root)
        if not self.samples:
            raise ValueError(f"no images under {self.root} (expected one sub-folder per identity)")
        self.num_classes = len(self.classes)
        self.flip = flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return crop_to_tensor(read_crop(path), flip=random_flip(self.flip)), label


def folder_pairs(root: Path, num_pairs: int, *, seed: int = 0) -> PairSet:
    """Half genuine, half impostor pairs drawn deterministically (by `seed`) from an aligned folder.

    Genuine pairs need identities with two or more images. Pairs are unique and
    interleaved (genuine, impostor, ...), so any prefix stays balanced.
    """
    _classes, samples = scan_folder(root)
    by_class: dict[int, list[Path]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    multi = [c for c, paths in by_class.items() if len(paths) >= 2]
    if not multi or len(by_class) < 2:
        raise ValueError(f"{root}: need two identities and one with two or more images to make pairs")
    rng = np.random.default_rng(seed)
    labels = sorted(by_class)
    seen: set[tuple[Path, Path]] = set()
    pairs: list[tuple[Path, Path, bool]] = []
    attempts = 0
    while len(pairs) < num_pairs and attempts < 50 * num_pairs:
        attempts += 1
        same = len(pairs) % 2 == 0
        if same:
            paths = by_class[multi[rng.integers(len(multi))]]
            i, j = rng.choice(len(paths), size=2, replace=False)
            a, b = paths[i], paths[j]
        else:
            ca, cb = rng.choice(len(labels), size=2, replace=False)
            pa, pb = by_class[labels[ca]], by_class[labels[cb]]
            a, b = pa[rng.integers(len(pa))], pb[rng.integers(len(pb))]
        key = (min(a, b), max(a, b))
        if key not in seen:
            seen.add(key)
            pairs.append((a, b, same))
    if len(pairs) < num_pairs:
        raise ValueError(f"{root}: only {len(pairs)} distinct pairs could be drawn, {num_pairs} asked")
    images = [read_crop(p) for a, b, _ in pairs for p in (a, b)]
    return PairSet(images, np.array([s for _, _, s in pairs], dtype=bool), name=Path(root).name)
