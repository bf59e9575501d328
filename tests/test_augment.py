"""Augmentations: properties every entry keeps, what each one does, the pipeline's order, the mixing
targets, and one-line errors for bad keys."""

import dataclasses

import pytest
import torch

from cifarlab import config as C
from cifarlab.augment import AUGMENTS, Pipeline, build_pipeline
from cifarlab.augment.image import random_flip, random_translate, source_index
from cifarlab.augment.mix import cutmix
from cifarlab.config import AugmentConfig
from cifarlab.data.batch import Batch
from cifarlab.errors import ConfigError

# each entry at a strength that changes images, and at zero strength (None: no such setting)
STRONG = {"flip": {}, "altflip": {}, "translate": {"translate": 0.1}, "affine": {"rotate": 30.0, "shear": 10.0},
          "resized_crop": {}, "photometric": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
          "cutout": {}, "erasing": {"erase_p": 1.0}, "mixup": {}, "cutmix": {}, "grayscale": {"gray_p": 0.5}}
ZERO = {"flip": None, "altflip": None, "translate": None, "affine": {"rotate": 0.0, "scale": 0.0, "shear": 0.0, "shift": 0.0},
        "resized_crop": {"crop_area": 1.0}, "photometric": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0},
        "cutout": {"cutout": 0}, "erasing": {"erase_p": 0.0}, "mixup": {"mix_p": 0.0}, "cutmix": {"mix_p": 0.0},
        "grayscale": {"gray_p": 0.0}}


def images(n=16, same=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (1 if same else n, 3, 32, 32), dtype=torch.uint8, generator=g)
    smooth = torch.nn.functional.avg_pool2d(x.float(), 5, 1, 2).round().to(torch.uint8)  # image-like
    return smooth.expand(n, -1, -1, -1).contiguous(memory_format=torch.channels_last)


def batch(x, labels=None):
    n = len(x)
    return Batch(x, torch.arange(n) % 10 if labels is None else labels, torch.arange(n))


def step(name, **keys):
    return Pipeline(AugmentConfig(pipeline=(name,), **keys))


def test_every_registered_augmentation_has_its_test_settings():
    assert set(AUGMENTS.names()) == set(STRONG) == set(ZERO)


@pytest.mark.parametrize("name", sorted(STRONG))
def test_shape_dtype_layout_kept_and_deterministic_under_a_seed(name):
    aug, b = step(name, **STRONG[name]), batch(images())
    out = aug(b, torch.Generator().manual_seed(3))
    assert out.images.shape == b.images.shape and out.images.dtype == torch.uint8
    assert out.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.labels, b.labels) and torch.equal(out.index, b.index)
    again = aug(b, torch.Generator().manual_seed(3))
    assert torch.equal(out.images, again.images)
    other = aug(b, torch.Generator().manual_seed(4))
    if name != "altflip":                                # derandomized: the index and epoch decide
        assert not torch.equal(out.images, other.images)   # the seed decides the draws


@pytest.mark.parametrize("name", sorted(n for n in ZERO if ZERO[n] is not None))
def test_identity_at_zero_strength(name):
    b = batch(images())
    out = step(name, **ZERO[name])(b, torch.Generator().manual_seed(0))
    assert torch.equal(out.images, b.images) and out.targets is None


@pytest.mark.parametrize("name", sorted(n for n in STRONG if not AUGMENTS.get(n).mixes))
def test_each_image_draws_its_own_parameters(name):
    b = batch(images(32, same=True))                   # 32 copies of one image
    out = step(name, **STRONG[name])(b, torch.Generator().manual_seed(1)).images
    distinct = {bytes(img.contiguous().numpy()) for img in out}
    assert len(distinct) >= (2 if name in ("flip", "altflip", "grayscale") else 8)  # a flip or a grey: two outcomes


def test_alternating_flip_mirrors_half_then_each_image_every_other_epoch():
    n = 2000
    x = images(n)
    b = Batch(x, torch.zeros(n, dtype=torch.long), torch.randperm(n, generator=torch.Generator().manual_seed(0)))
    aug, gen = step("altflip"), torch.Generator().manual_seed(0)

    def mirrored(epoch):
        out = aug(b, gen, epoch).images
        flipped = (out == x.flip(3)).flatten(1).all(1)
        assert torch.equal(out[flipped], x.flip(3)[flipped]) and torch.equal(out[~flipped], x[~flipped])
        return flipped
    first = mirrored(0)
    assert 0.45 < first.float().mean() < 0.55
    for epoch in range(1, 4):
        now = mirrored(epoch)
        assert torch.equal(now, ~first if epoch % 2 else first)    # each image alternates
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    again = aug(b.take(shuffled), gen, 0).images                     # an image's flip follows its index
    assert torch.equal(again, aug(b, gen, 0).images[shuffled])


def test_translate_and_flip_are_the_draws_of_before_the_pipeline():
    """flip then translate must draw from the generator exactly as the runs committed before the
    pipeline existed did (their numbers are reproducible)."""
    x = images(16)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    want = random_translate(random_flip(x, g1), g1, 3, "edge")
    got = Pipeline(AugmentConfig(pipeline=("flip", "translate"), translate=0.1))(batch(x), g2).images
    assert torch.equal(got, want)


def test_the_pipeline_runs_in_the_order_written():
    x = batch(images(8))
    ab = Pipeline(AugmentConfig(pipeline=("cutout", "affine"), cutout=12, rotate=40.0))
    ba = Pipeline(AugmentConfig(pipeline=("affine", "cutout"), cutout=12, rotate=40.0))
    a, b = (p(x, torch.Generator().manual_seed(0)).images for p in (ab, ba))
    assert not torch.equal(a, b)
    # cutout last leaves exact grey squares; cutout first has them rotated and interpolated
    assert ((b == 128).flatten(1).sum(1) >= 3 * 36).all()
    assert build_pipeline(AugmentConfig()) is None


def test_affine_rotates_by_180_exactly():
    x = images(4)
    out = step("affine", rotate=180.0, scale=0.0, shift=0.0)(batch(x), torch.Generator().manual_seed(0)).images
    # a half turn of a 32 px image maps pixels onto pixels: warp through it is exact
    from cifarlab.augment.image import warp
    theta = torch.tensor([[-1.0, 0, 0], [0, -1.0, 0]]).expand(4, 2, 3)
    assert torch.equal(warp(x, theta, "edge"), x.flip(2).flip(3))
    assert out.shape == x.shape


def test_cutout_fills_a_square_and_erasing_a_rectangle_inside():
    x = images(64)
    out = step("cutout", cutout=8)(batch(x), torch.Generator().manual_seed(0)).images
    changed = (out != x).any(1)                         # (N, H, W)
    assert (changed.flatten(1).sum(1) <= 64).all()      # at most 8 x 8, cut by the border
    er = step("erasing", erase_p=1.0, erase_area=0.25)(batch(x), torch.Generator().manual_seed(0)).images
    area = (er != x).any(1).flatten(1).sum(1).float()
    assert (area <= 0.25 * 1024 + 40).all() and (area > 0).all()


def test_translate_shifts_each_image_within_bounds():
    x = images(32)
    for fill in ("edge", "zero", "reflect"):
        y = random_translate(x, torch.Generator().manual_seed(1), 3, fill)
        for i in range(len(x)):  # the centre of each output is a shifted window of its input
            assert any(torch.equal(y[i, :, 3:29, 3:29], x[i, :, 3 - dy:29 - dy, 3 - dx:29 - dx])
                       for dy in range(-3, 4) for dx in range(-3, 4))
    assert torch.equal(random_translate(x, torch.Generator().manual_seed(1), 0, "edge"), x)


def test_source_index_fill_rules():
    shift = torch.tensor([2, -2])
    edge, inside = source_index(shift, 5, "edge")
    assert edge.tolist() == [[0, 0, 0, 1, 2], [2, 3, 4, 4, 4]]
    assert inside.tolist() == [[False, False, True, True, True], [True, True, True, False, False]]
    reflect, _ = source_index(shift, 5, "reflect")
    assert reflect.tolist() == [[2, 1, 0, 1, 2], [2, 3, 4, 3, 2]]


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixed_targets_sum_to_one_and_weigh_the_two_labels(name):
    b = batch(images(16))
    out = step(name)(b, torch.Generator().manual_seed(2))
    assert out.targets.shape == (16, 10)
    assert torch.allclose(out.targets.sum(1), torch.ones(16))
    assert ((out.targets > 0).sum(1) <= 2).all()
    # mixing mixed targets keeps the rows summing to 1
    twice = Pipeline(AugmentConfig(pipeline=("mixup", "cutmix")))(b, torch.Generator().manual_seed(2))
    assert torch.allclose(twice.targets.sum(1), torch.ones(16))


def test_cutmix_weights_equal_the_pasted_area():
    n = 10
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous(
        memory_format=torch.channels_last)                # image i is all i: its pixels say where they came from
    for seed in range(5):
        out = cutmix(batch(x, torch.arange(n)), torch.Generator().manual_seed(seed), 1.0, 1.0, n)
        own = (out.images[:, 0] == torch.arange(n).view(n, 1, 1)).flatten(1).float().mean(1)
        assert torch.allclose(out.targets[torch.arange(n), torch.arange(n)], own)


def test_mixing_stops_in_the_last_epochs():
    p = Pipeline(AugmentConfig(pipeline=("flip", "mixup"), mix_off=2))
    b = batch(images(8))
    assert p(b, torch.Generator().manual_seed(0), epoch=7, epochs=10).targets is not None
    assert p(b, torch.Generator().manual_seed(0), epoch=8, epochs=10).targets is None


def test_dominant_label_is_what_training_accuracy_counts():
    b = batch(images(4), torch.tensor([0, 1, 2, 3]))
    mixed = dataclasses.replace(b, targets=torch.tensor([[0.7, 0.3, 0, 0], [0.2, 0.8, 0, 0],
                                                        [0, 0, 0.4, 0.6], [0.5, 0, 0, 0.5]]))
    assert b.dominant.tolist() == [0, 1, 2, 3] and mixed.dominant.tolist() == [0, 1, 3, 0]


@pytest.mark.parametrize("keys, message", [
    ({"pipeline": ["flip", "blur"]}, "augment.pipeline: 'blur' is invalid; valid: affine, altflip, cutmix"),
    ({"pipeline": ["flip", "flip"]}, "names an augmentation twice"),
    ({"erase_p": -0.1}, r"augment.erase_p = -0.1 is a probability: it must lie in \[0, 1\]"),
    ({"mix_p": 1.5}, "augment.mix_p = 1.5 is a probability"),
    ({"mix_alpha": 0.0}, "augment.mix_alpha = 0.0 must be > 0"),
    ({"rotate": 200.0}, r"augment.rotate = 200.0 must lie in \[0, 180\] degrees"),
    ({"rotate": -5.0}, "augment.rotate = -5.0 must be >= 0"),
    ({"pipeline": ["translate"]}, "augment.pipeline has 'translate' but augment.translate = 0"),
    ({"translate": 0.1}, "augment.translate = 0.1 is set but 'translate' is not in augment.pipeline"),
    ({"flip": True}, "augment.flip was replaced by augment.pipeline"),
])
def test_bad_augment_keys_are_one_line(keys, message):
    with pytest.raises(ConfigError, match=message) as err:
        C.from_dict({"augment": keys})
    assert "\n" not in str(err.value)
