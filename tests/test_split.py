import numpy as np
import pytest

from cifarlab.config import DataConfig
from cifarlab.data.loader import make_splits
from cifarlab.data.sources import Arrays
from cifarlab.data.split import stratified_split
from cifarlab.errors import ConfigError


def labels(n=1000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, n)


def test_split_is_deterministic_and_disjoint():
    y = labels()
    a_keep, a_held = stratified_split(y, 100, seed=3)
    b_keep, b_held = stratified_split(y, 100, seed=3)
    assert (a_held == b_held).all() and (a_keep == b_keep).all()
    assert len(np.intersect1d(a_keep, a_held)) == 0 and len(a_keep) + len(a_held) == len(y)
    assert not np.array_equal(stratified_split(y, 100, seed=4)[1], a_held)


def test_split_is_stratified():
    y = np.repeat(np.arange(10), [100, 200, 50, 150, 100, 100, 100, 100, 50, 50])
    _, held = stratified_split(y, 100, seed=0)
    counts = np.bincount(y[held], minlength=10)
    expected = np.bincount(y, minlength=10) * 100 / len(y)
    assert counts.sum() == 100 and np.all(np.abs(counts - expected) < 1)


def test_make_splits_sizes_and_train_only_statistics():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (500, 32, 32, 3), dtype=np.uint8)
    arrays = Arrays(imgs, np.arange(500) % 10, imgs[:50], np.arange(50) % 10, tuple("abcdefghij"))
    s = make_splits(arrays, DataConfig(val_size=100, subset=300))
    assert (len(s.train), len(s.val), len(s.test)) == (200, 100, 50)
    assert s.train.images.shape == (200, 3, 32, 32) and s.train.images.dtype.is_floating_point is False
    train_pixels = s.train.images.permute(0, 2, 3, 1).reshape(-1, 3).double()
    assert np.allclose(s.mean, train_pixels.mean(0).numpy())
    with pytest.raises(ConfigError, match="val_size"):
        make_splits(arrays, DataConfig(val_size=300, subset=300))
