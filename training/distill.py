"""Embedding distillation: pull the student's embedding towards a teacher ONNX model's.

The student's embedding (B, D) is projected by a linear layer to the teacher's size
(B, T), normalised, and compared with the teacher's unit embedding of the same
aligned crop: the loss is the mean of 1 - cosine. The projection trains with the
student but lives outside the backbone, so export never sees it.

Teacher embeddings are computed once per training image, with the service's own
ONNX embedder (`builtin:sface` or a manifest path), and cached next to the dataset
as `<root>/.teacher-<hash>.npy`, the hash covering the teacher and the file list.
The target is the teacher's embedding of the crop as stored; with `data.flip` a
mirrored crop is pulled to it too (faces are nearly symmetric; a flip-averaged target
would double the teacher's cost, the larger part of a short CPU run's preparation).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from training.data.folder import read_crop
from training.embedders import CropEmbedder, embed_all


class _FileDataset(Protocol):
    """A dataset that knows its files: what `FolderDataset` (and so `synthetic`) is."""

    @property
    def root(self) -> Path: ...

    @property
    def samples(self) -> Sequence[tuple[Path, int]]: ...


def distill_loss(projected: Tensor, teacher: Tensor) -> Tensor:
    """Mean 1 - cosine between projected student embeddings (B, T) and unit teacher embeddings (B, T)."""
    return (1.0 - (F.normalize(projected, dim=1) * teacher).sum(dim=1)).mean()


class Distiller(nn.Module):
    """Projection (D -> T, no bias) plus the teacher's embedding of every training sample, on the device.

    The teacher matrix (N, T) is a plain tensor attribute, not a buffer: DDP broadcasts
    every buffer of the module it wraps on every forward (a 244 MiB one cost 126 ms a
    step), and this one never changes. `.to()` still moves it, through `_apply`.
    """

    def __init__(self, student_size: int, teacher: NDArray[np.float32], weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.projection = nn.Linear(student_size, teacher.shape[1], bias=False)
        self.teacher = torch.from_numpy(np.ascontiguousarray(teacher, np.float32))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Distiller:
        super()._apply(fn, recurse)
        self.teacher = fn(self.teacher)
        return self

    def forward(self, embeddings: Tensor, index: Tensor) -> Tensor:
        """Weighted loss for embeddings (B, D) of the samples at `index` (B,)."""
        target = self.teacher[index]
        return self.weight * distill_loss(self.projection(embeddings.float()), target)


class WithIndex(Dataset[tuple[Tensor, int, int]]):
    """Yields (image, label, index): the index finds the sample's teacher embedding."""

    def __init__(self, dataset: Dataset[tuple[Tensor, int]]) -> None:
        self.dataset = dataset
        self.num_classes: int = dataset.num_classes  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image, label = self.dataset[index]
        return image, label, index


def cache_path(root: Path, samples: Sequence[tuple[Path, int]], teacher_ref: str) -> Path:
    """Where a folder's teacher embeddings are cached: the name hashes the teacher and the (file, label) list."""
    digest = hashlib.sha256(teacher_ref.encode())
    for path, label in samples:
        digest.update(f"\n{Path(path).relative_to(root)}\t{label}".encode())
    return Path(root) / f".teacher-{digest.hexdigest()[:16]}.npy"


def teacher_embeddings(
    dataset: _FileDataset,
    teacher_ref: str,
    *,
    embedder: CropEmbedder | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> NDArray[np.float32]:
    """(N, T) unit teacher embeddings of the dataset's samples, in order; read from the cache when there."""
    path = cache_path(dataset.root, dataset.samples, teacher_ref)
    if path.exists():
        cached: NDArray[np.float32] = np.load(path)
        if len(cached) == len(dataset.samples):
            return cached
    if embedder is None:
        from training.embedders import load_onnx_embedder

        embedder = load_onnx_embedder(teacher_ref)
    out = []
    for start in tqdm(range(0, len(dataset.samples), batch_size), desc="teacher", disable=not progress, unit="batch"):
        crops = [read_crop(p) for p, _ in dataset.samples[start : start + batch_size]]
        out.append(embed_all(embedder, crops, batch_size=batch_size))
    emb = np.concatenate(out).astype(np.float32)
    # Written under a temporary name and renamed: concurrent ranks may each compute it.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb


def build_distiller(
    dataset: object, student_size: int, teacher_ref: str, weight: float, progress: bool = True
) -> Distiller:
    if not hasattr(dataset, "samples") or not hasattr(dataset, "root"):
        raise ValueError(f"distillation needs a folder dataset (kind = 'folder' or 'synthetic'), got {dataset!r}")
    teacher = teacher_embeddings(cast(_FileDataset, dataset), teacher_ref, progress=progress)
    return Distiller(student_size, teacher, weight)
