from __future__ import annotations

import itertools
import math

import pytest

from podium.engine.schedules import LRSchedule


def test_cosine_warms_up_then_decays_to_floor():
    s = LRSchedule(kind="cosine", base_lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(60) == pytest.approx(0.55)
    assert s.lr_at(110) == pytest.approx(0.1)
    assert s.lr_at(500) == pytest.approx(0.1)
    lrs = [s.lr_at(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_onecycle_noam_constant():
    one = LRSchedule(kind="onecycle", base_lr=2.0, warmup_steps=4, total_steps=14, min_lr_ratio=0.0)
    assert (
        one.lr_at(3) == pytest.approx(2.0)
        and one.lr_at(9) == pytest.approx(1.0)
        and one.lr_at(14) == 0.0
    )
    noam = LRSchedule(kind="noam", base_lr=1.0, warmup_steps=100, total_steps=1000)
    assert noam.lr_at(99) == pytest.approx(1.0)
    assert noam.lr_at(399) == pytest.approx(0.5)
    assert noam.lr_at(49) == pytest.approx(0.5)
    const = LRSchedule(kind="constant", base_lr=3.0, warmup_steps=0, total_steps=10)
    assert {const.lr_at(i) for i in range(20)} == {3.0}


def test_rescale_keeps_shape_and_is_checkpointed():
    s = LRSchedule(kind="cosine", base_lr=1.0, warmup_steps=0, total_steps=100, min_lr_ratio=0.0)
    before = s.lr_at(80) / s.lr_at(50)
    s.rescale_to(0.01, 50)
    assert s.lr_at(50) == pytest.approx(0.01)
    assert s.lr_at(80) / s.lr_at(50) == pytest.approx(before)
    t = LRSchedule(kind="cosine", base_lr=1.0, warmup_steps=0, total_steps=100, min_lr_ratio=0.0)
    t.load_state_dict(s.state_dict())
    assert t.lr_at(70) == s.lr_at(70)
    assert math.isfinite(t.lr_at(100))
