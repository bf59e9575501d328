import math

import pytest
import torch

from cifarlab.augment import build_pipeline, random_flip, random_translate
from cifarlab.config import AugmentConfig, ScheduleConfig
from cifarlab.optim import SCHEDULES, build_schedule


def batch(n=16):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)


def test_flip_mirrors_some_images_and_keeps_others():
    x = batch(64)
    y = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (y == x.flip(3)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert (flipped | kept).all() and flipped.any() and kept.any()


@pytest.mark.parametrize("fill", ["edge", "zero", "reflect"])
def test_translate_shifts_each_image_within_bounds(fill):
    x = batch(32)
    y = random_translate(x, torch.Generator().manual_seed(1), 3, fill)
    assert y.shape == x.shape and y.dtype == torch.uint8
    for i in range(len(x)):  # the centre of each output is a shifted window of its input
        found = any(torch.equal(y[i, :, 3:29, 3:29], x[i, :, 3 - dy:29 - dy, 3 - dx:29 - dx])
                    for dy in range(-3, 4) for dx in range(-3, 4))
        assert found
    if fill == "zero":
        assert (y == 0).any()


def test_pipeline_is_deterministic_per_generator_and_none_when_off():
    assert build_pipeline(AugmentConfig()) is None
    aug = build_pipeline(AugmentConfig(flip=True, translate=0.1))
    x = batch()
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), aug(x, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("name", SCHEDULES.names())
@pytest.mark.parametrize("warmup", [0.0, 1.5])
def test_schedules_are_bounded_and_warm_up_linearly(name, warmup):
    f = build_schedule(ScheduleConfig(name=name, warmup=warmup, step_every=2, restart_every=2))
    spe, total = 10, 100
    values = [f(s, total, spe) for s in range(total)]
    assert all(0 <= v <= 1 + 1e-9 for v in values)
    if warmup:
        assert values[0] == pytest.approx(1 / 15) and values[14] == pytest.approx(1.0)
    if name != "constant":
        assert values[-1] < values[int(warmup * spe)]


def test_cosine_reaches_final_lr_and_step_decays():
    f = build_schedule(ScheduleConfig(name="cosine", final_lr=0.1))
    assert f(0, 100, 10) == 1.0 and f(100, 100, 10) == pytest.approx(0.1)
    g = build_schedule(ScheduleConfig(name="step", step_every=3, step_gamma=0.5))
    assert [g(s * 10, 100, 10) for s in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    h = build_schedule(ScheduleConfig(name="cosine_restarts", restart_every=2))
    assert h(20, 100, 10) == 1.0 and math.isclose(h(10, 100, 10), 0.5)


def test_cosine_restarts_grow_by_restart_mult():
    """SGDR with T_0 = 5, T_mult = 2 over 15 epochs: cycles of 5 and 10 epochs, ending at the bottom."""
    f = build_schedule(ScheduleConfig(name="cosine_restarts", restart_every=5, restart_mult=2))
    spe, total = 10, 150
    assert [f(s, total, spe) for s in (0, 50)] == [1.0, 1.0]            # restarts at epochs 0 and 5
    assert f(100, total, spe) == pytest.approx(0.5)                     # half way through the second cycle
    assert f(149, total, spe) < 1e-3 and f(49, total, spe) < 0.01       # each cycle ends near 0
    assert f(150, total, spe) == 1.0                                    # the third cycle (20 epochs) starts
    # a growth too small to change a rounded cycle still lengthens it by one step: cycles of 1, 2, 3 steps
    g = build_schedule(ScheduleConfig(name="cosine_restarts", restart_every=1, restart_mult=1.01))
    assert [g(s, 10, 1) == 1.0 for s in range(7)] == [True, True, False, True, False, False, True]


def test_source_index_fill_rules():
    from cifarlab.augment import source_index
    shift = torch.tensor([2, -2])
    edge, inside = source_index(shift, 5, "edge")
    assert edge.tolist() == [[0, 0, 0, 1, 2], [2, 3, 4, 4, 4]]
    assert inside.tolist() == [[False, False, True, True, True], [True, True, True, False, False]]
    reflect, _ = source_index(shift, 5, "reflect")
    assert reflect.tolist() == [[2, 1, 0, 1, 2], [2, 3, 4, 3, 2]]


def test_end_of_schedule_warning_only_for_restarts_that_stop_mid_cycle():
    from cifarlab.optim import end_of_schedule_warning as warning
    sgdr = ScheduleConfig(name="cosine_restarts", restart_every=5, restart_mult=2)
    assert warning(sgdr, 15) is None and warning(sgdr, 35) is None      # cycles 5, 10, 20 end at 15 and 35
    assert "at 50% of the peak LR" in warning(sgdr, 10)                  # half way through the 10-epoch cycle
    assert "ends mid-cycle" in warning(ScheduleConfig(name="cosine_restarts", restart_every=10), 15)
    assert warning(ScheduleConfig(name="cosine_restarts", restart_every=5, warmup=1), 11) is None
    assert warning(ScheduleConfig(name="constant"), 15) is None         # a constant LR is what it says
