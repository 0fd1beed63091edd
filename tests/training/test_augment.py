from __future__ import annotations

import numpy as np

from training.data import augment as aug


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return np.ascontiguousarray(smooth)


def test_neutral_parameters_leave_the_image_alone() -> None:
    image = _image()
    np.testing.assert_array_equal(aug.rotate_scale_shift(image, 0.0, 1.0, (0.0, 0.0)), image)
    np.testing.assert_array_equal(aug.color_jitter(image, 0.0, 1.0, 1.0), image)
    np.testing.assert_array_equal(aug.flip(aug.flip(image)), image)
    np.testing.assert_array_equal(aug.flip(image)[:, 0], image[:, -1])


def test_each_effect_changes_the_image_in_its_own_way() -> None:
    image = _image()
    rotated = aug.rotate_scale_shift(image, 90.0, 1.0, (0.0, 0.0))
    np.testing.assert_array_equal(rotated[4:-8:8, 4:-8:8], np.rot90(image)[4:-8:8, 4:-8:8])  # block centres
    brighter = aug.color_jitter(image, 0.1, 1.0, 1.0)
    assert 20 < float(brighter.mean()) - float(image.mean()) <= 26
    grey = aug.color_jitter(image, 0.0, 1.0, 0.0)
    assert np.abs(grey.astype(int) - grey[..., :1].astype(int)).max() <= 1
    blurred = aug.gaussian_blur(image, 2.0)
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < np.abs(np.diff(image.astype(int), axis=1)).mean()
    low = aug.jpeg(image, 20)
    assert low.shape == image.shape
    assert 0 < np.abs(low.astype(int) - image.astype(int)).mean() < 30
    assert aug.downscale(image, 0.25).shape == image.shape
    luma = aug.to_grey(image)
    assert luma.shape == image.shape and (luma == luma[..., :1]).all()
    white = np.full((2, 2, 3), 255, np.uint8)
    np.testing.assert_array_equal(aug.to_grey(white), white)


def test_augment_is_reproducible_from_the_seed() -> None:
    image = _image()
    a = aug.augment(image, np.random.default_rng(5))
    b = aug.augment(image, np.random.default_rng(5))
    c = aug.augment(image, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8
    assert a.shape == image.shape


def test_grey_probability_one_gives_grey_photos_and_zero_keeps_colour() -> None:
    image = _image()
    grey = aug.augment(image, np.random.default_rng(1), aug.AugmentOptions(grey_p=1.0))
    assert (grey == grey[..., :1]).all()
    colour = aug.augment(image, np.random.default_rng(1), aug.AugmentOptions(grey_p=0.0))
    assert not (colour == colour[..., :1]).all()
