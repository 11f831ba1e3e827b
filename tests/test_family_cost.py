"""A family's cost comes from its config alone, and matches the model it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.engine.config import load_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["demo.toml", "emopia-cp.toml"])
def test_cp_cost_counts_the_parameters_the_model_has(profile):
    p = load_profile(ROOT / "profiles" / profile)
    family = p.family_spec
    cost = family.cost(p.model, p.data)
    model = family.build_model(p.model, {})
    assert cost.params == sum(t.numel() for t in model.parameters())
    assert cost.flops_per_token > 6 * cost.params  # plus attention
    assert cost.fp32_bytes == 16 * cost.params


def test_emopia_size_is_known_before_allocating():
    p = load_profile(ROOT / "profiles" / "emopia-cp.toml")
    assert 38e6 < p.family_spec.cost(p.model, p.data).params < 41e6  # EMOPIA's 39M model
