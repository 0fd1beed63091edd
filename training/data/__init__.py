"""Training data in the formats users have: aligned folders, InsightFace RecordIO, synthetic people.

Every dataset yields `(FloatTensor (3, 112, 112) in [-1, 1] RGB, int label)` and
has `num_classes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from training.config import DataConfig


class FaceDataset(Protocol):
    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


def build_dataset(cfg: DataConfig, train: bool, num_classes: int | None = None) -> Dataset[tuple[torch.Tensor, int]]:
    """The dataset `cfg.kind` names, at `cfg.root`; flips only when training with `cfg.flip`.

    `synthetic` generates the identities into `cfg.root` first when they are not
    complete there (resumable), then reads them as a folder. `num_classes`, when known
    (another rank counted them), spares a RecordIO without identity records a full pass.
    """
    root = Path(cfg.root)
    flip = bool(train and cfg.flip)
    if cfg.kind == "folder":
        from training.data.folder import FolderDataset

        return FolderDataset(root, flip=flip)
    if cfg.kind == "recordio":
        from training.data.recordio import RecordIODataset

        return RecordIODataset(root, flip=flip, num_classes=num_classes)
    if cfg.kind == "synthetic":
        from training.data.folder import FolderDataset
        from training.data.synthetic import SynthOptions, generate_identities

        options = SynthOptions.from_config(cfg)
        generate_identities(root, options)
        return FolderDataset(root, flip=flip)
    raise ValueError(f"unknown data kind {cfg.kind!r}; expected 'folder', 'recordio' or 'synthetic'")
