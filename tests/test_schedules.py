import math

import pytest

from cifarlab.config import ScheduleConfig
from cifarlab.optim import SCHEDULES, build_schedule


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


def test_end_of_schedule_warning_only_for_restarts_that_stop_mid_cycle():
    from cifarlab.optim import end_of_schedule_warning as warning
    sgdr = ScheduleConfig(name="cosine_restarts", restart_every=5, restart_mult=2)
    assert warning(sgdr, 15) is None and warning(sgdr, 35) is None      # cycles 5, 10, 20 end at 15 and 35
    assert "at 50% of the peak LR" in warning(sgdr, 10)                  # half way through the 10-epoch cycle
    assert "ends mid-cycle" in warning(ScheduleConfig(name="cosine_restarts", restart_every=10), 15)
    assert warning(ScheduleConfig(name="cosine_restarts", restart_every=5, warmup=1), 11) is None
    assert warning(ScheduleConfig(name="constant"), 15) is None         # a constant LR is what it says


def test_warm_up_starts_at_warmup_start_and_still_reaches_the_peak_on_time():
    spe, total = 10, 100
    plain = build_schedule(ScheduleConfig(name="linear", warmup=1.5))
    f = build_schedule(ScheduleConfig(name="linear", warmup=1.5, warmup_start=0.2))
    assert f(0, total, spe) == pytest.approx(0.2 + 0.8 / 15) and f(14, total, spe) == pytest.approx(1.0)
    assert all(f(s, total, spe) > plain(s, total, spe) for s in range(14))      # above the plain ramp, rising
    assert all(f(s, total, spe) < f(s + 1, total, spe) for s in range(14))
    assert [f(s, total, spe) for s in range(15, total)] == [plain(s, total, spe) for s in range(15, total)]
