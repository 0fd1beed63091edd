from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from training.data.images import encode_rgb
from training.data.verification_bin import load_bin, write_bin


def _crops(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(n)]


def test_bin_round_trip_is_the_insightface_pickle(tmp_path: Path) -> None:
    crops = _crops(6)
    path = tmp_path / "lfw.bin"
    write_bin(path, [encode_rgb(c, ".png") for c in crops], [True, False, True])
    with open(path, "rb") as fh:
        bins, issame = pickle.load(fh, encoding="bytes")
    assert isinstance(bins, list)
    assert all(isinstance(b, bytes) for b in bins)
    assert issame == [True, False, True]

    pairs = load_bin(path)
    assert pairs.name == "lfw"
    assert pairs.issame.tolist() == [True, False, True]
    for got, want in zip(pairs.images, crops, strict=True):
        np.testing.assert_array_equal(got, want)
    assert load_bin(path, limit_pairs=2).issame.tolist() == [True, False]


def test_python2_style_pickle_with_numpy_buffers_loads(tmp_path: Path) -> None:
    crops = _crops(2)
    encoded = [np.frombuffer(encode_rgb(c, ".png"), dtype=np.uint8) for c in crops]
    path = tmp_path / "cfp.bin"
    with open(path, "wb") as fh:
        pickle.dump((encoded, np.array([False])), fh, protocol=2)
    pairs = load_bin(path)
    assert pairs.issame.tolist() == [False]
    np.testing.assert_array_equal(pairs.images[1], crops[1])


def test_mismatched_counts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two per pair"):
        write_bin(tmp_path / "x.bin", [b"a"], [True])
