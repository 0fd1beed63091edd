"""InsightFace verification `.bin` files (LFW, CFP-FP, AgeDB-30, ...).

A `.bin` is a pickle of `(bins, issame_list)`: `bins` holds 2 * P encoded images
(JPEG or PNG bytes, aligned 112x112; pair i is bins[2i], bins[2i+1]) and
`issame_list` P booleans. The public files were pickled by Python 2, so they are
read with `encoding="bytes"`. Only load `.bin` files you trust: a pickle can run code.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.data.images import decode_rgb


@dataclass(frozen=True)
class PairSet:
    """Verification pairs: `images[2i]` and `images[2i+1]` are pair i, `issame[i]` its truth."""

    images: list[NDArray[np.uint8]]  # each (H, W, 3) RGB
    issame: NDArray[np.bool_]  # (P,)
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.images) != 2 * len(self.issame):
            raise ValueError(f"{len(self.images)} images for {len(self.issame)} pairs (need two per pair)")


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, np.ndarray):
        return item.tobytes()
    if isinstance(item, str):  # a Python 2 str unpickled as latin-1
        return item.encode("latin-1")
    raise ValueError(f"unexpected image entry of type {type(item).__name__} in .bin")


def read_bin_raw(path: Path) -> tuple[list[bytes], list[bool]]:
    with open(path, "rb") as fh:
        loaded = pickle.load(fh, encoding="bytes")
    if not isinstance(loaded, tuple | list) or len(loaded) != 2:
        raise ValueError(f"{path}: expected a pickled (bins, issame_list) pair")
    bins, issame = loaded
    return [_as_bytes(b) for b in bins], [bool(s) for s in issame]


def load_bin(path: Path, *, limit_pairs: int | None = None) -> PairSet:
    """Read and decode a `.bin` (optionally only its first `limit_pairs` pairs)."""
    bins, issame = read_bin_raw(path)
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{path}: {len(bins)} images for {len(issame)} pairs")
    if limit_pairs is not None:
        bins, issame = bins[: 2 * limit_pairs], issame[:limit_pairs]
    return PairSet([decode_rgb(b) for b in bins], np.asarray(issame, dtype=bool), name=Path(path).stem)


def write_bin(path: Path, bins: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write `(bins, issame_list)` as InsightFace's tools do (a list of bytes, a list of bool)."""
    if len(bins) != 2 * len(issame):
        raise ValueError(f"{len(bins)} images for {len(issame)} pairs (need two per pair)")
    with open(path, "wb") as fh:
        pickle.dump(([bytes(b) for b in bins], [bool(s) for s in issame]), fh, protocol=pickle.HIGHEST_PROTOCOL)
