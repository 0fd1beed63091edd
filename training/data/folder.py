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


def sample_pairs(
    labels: NDArray[np.int64], num_pairs: int, *, seed: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """(P, 2) distinct index pairs and their truth: genuine and impostor interleaved, deterministic in `seed`.

    Interleaving keeps any prefix balanced. Genuine pairs need an identity with two
    or more images.
    """
    labels = np.asarray(labels)
    by_class: dict[int, NDArray[np.int64]] = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    multi = [c for c, idx in by_class.items() if len(idx) >= 2]
    classes = sorted(by_class)
    if not multi or len(classes) < 2:
        raise ValueError("need two identities and one with two or more images to make pairs")
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    truth: list[bool] = []
    attempts = 0
    while len(pairs) < num_pairs and attempts < 50 * num_pairs:
        attempts += 1
        same = len(pairs) % 2 == 0
        if same:
            idx = by_class[multi[rng.integers(len(multi))]]
            i, j = rng.choice(idx, size=2, replace=False)
        else:
            ca, cb = rng.choice(len(classes), size=2, replace=False)
            i, j = rng.choice(by_class[classes[ca]]), rng.choice(by_class[classes[cb]])
        key = (int(min(i, j)), int(max(i, j)))
        if key not in seen:
            seen.add(key)
            pairs.append((int(i), int(j)))
            truth.append(same)
    if len(pairs) < num_pairs:
        raise ValueError(f"only {len(pairs)} distinct pairs could be drawn, {num_pairs} asked")
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(truth, dtype=bool)


def max_balanced_pairs(labels: NDArray[np.int64]) -> int:
    """How many distinct pairs, half genuine and half impostor, the labels allow."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    genuine = int(np.sum(counts * (counts - 1) // 2))
    total = len(labels) * (len(labels) - 1) // 2
    return 2 * min(genuine, total - genuine)


def load_folder(root: Path) -> tuple[list[NDArray[np.uint8]], NDArray[np.int64], list[str]]:
    """Every crop of an aligned folder in memory: (crops, labels, identity names)."""
    classes, samples = scan_folder(root)
    return [read_crop(p) for p, _ in samples], np.array([c for _, c in samples], dtype=np.int64), classes


def folder_pairs(root: Path, num_pairs: int, *, seed: int = 0) -> PairSet:
    """`sample_pairs` over an aligned folder, as a `PairSet` of crops."""
    _, samples = scan_folder(root)
    pairs, issame = sample_pairs(np.array([c for _, c in samples]), num_pairs, seed=seed)
    images = [read_crop(samples[int(i)][0]) for i in pairs.reshape(-1)]
    return PairSet(images, issame, name=Path(root).name)
