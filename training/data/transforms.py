"""Aligned crop -> network input, the one place the training side normalises pixels.

The contract with the exported model's manifest: RGB, (x - 127.5) / 127.5, NCHW.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

INPUT_MEAN = 127.5
INPUT_STD = 127.5
CROP_SIZE = 112


def crop_to_tensor(rgb: NDArray[np.uint8], *, flip: bool = False) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [-1, 1], optionally mirrored."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB crop, got {rgb.shape}")
    if flip:
        rgb = rgb[:, ::-1]
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
    return (torch.from_numpy(chw) - INPUT_MEAN) / INPUT_STD


def random_flip(train_flip: bool) -> bool:
    """Draw a mirror decision from torch's RNG, so DataLoader worker seeding makes it reproducible."""
    return train_flip and bool(torch.rand(()) < 0.5)
