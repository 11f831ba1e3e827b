"""Which way each series improves, declared by its family, and the legend's "best" that follows it.

A loss is best at its minimum; a score (accuracy, the CP conditioning check's fraction of samples
matching) at its maximum. The legend used to show every reading's minimum as its best.
"""

from __future__ import annotations

import dataclasses

import pytest

from podium.engine import series as names
from podium.engine.events import Scalars
from podium.engine.families.registry import EpochHook, get_family
from podium.tui.model import RunModel
from podium.tui.widgets.loss_panel import PlotOptions, build_heads, build_total, plot_views
from tests.families.toy import FAMILY as TOY


def test_losses_improve_down_and_scores_up_unless_declared():
    assert names.default_direction("train/loss") == "min"
    assert names.default_direction("val/loss/pitch") == "min"
    assert names.default_direction("val/accuracy") == "max"
    assert names.default_direction("cond/valence") == "max"
    assert TOY.direction("train/loss/class") == "min" and TOY.direction("val/loss") == "min"
    assert TOY.direction("val/accuracy") == "max" and TOY.direction("probe/confidence") == "max"
    cp = get_family("cp")
    assert cp.epoch_hooks[0].direction == "max" and cp.direction("cond/valence") == "max"
    # A family declares the other way where a metric or a hook's values improve downward.
    errs = EpochHook(
        name="pitch error",
        group="err",
        title="t",
        every_epochs=lambda p: 1,
        run=lambda m, p, e: {},
        direction="min",
    )
    fam = dataclasses.replace(
        TOY,
        metrics=("accuracy", "perplexity"),
        metric_directions={"perplexity": "min"},
        epoch_hooks=(*TOY.epoch_hooks, errs),
    )
    assert fam.direction("val/perplexity") == "min" and fam.direction("val/accuracy") == "max"
    assert fam.direction("err/pitch") == "min" and fam.direction("probe/confidence") == "max"


@pytest.mark.parametrize(
    ("directions", "message"),
    [
        ({"perplexity": "min"}, "undeclared metric 'perplexity'"),
        ({"accuracy": "down"}, "metric 'accuracy': direction 'down'"),
    ],
)
def test_a_bad_direction_declaration_is_refused(directions, message):
    with pytest.raises(TypeError, match=message):
        dataclasses.replace(TOY, metric_directions=directions)


def test_best_is_the_minimum_or_the_maximum_by_direction():
    assert names.best([0.3, float("nan"), 0.8, 0.5], "max") == 0.8
    assert names.best([0.3, float("nan"), 0.8, 0.5], "min") == 0.3
    assert names.best([float("nan")], "max") is None and names.best([], "min") is None


def _cp_model() -> RunModel:
    m = RunModel()
    m.family = "cp"
    m.heads = ["type", "pitch"]
    m.metric_names = ["perplexity"]
    for step, valence in ((10, 0.312), (20, 0.812), (30, 0.562)):
        m.apply(
            [
                Scalars(
                    step=step,
                    epoch=step / 10,
                    wall=float(step),
                    values={"cond/valence": valence, "val/loss": 4.0 - step / 10},
                )
            ]
        )
    return m


def test_the_conditioning_check_legend_shows_the_highest_value_as_best():
    m = _cp_model()
    group = [v.kind for v in plot_views(m)].index("group")
    _, legend, _ = build_heads(m, PlotOptions(head_index=group))
    text = legend[0].text().plain
    assert text == "● valence 0.562 ↑0.812"  # last, then best: the maximum, arrow up
    # Losses keep their minimum as best.
    _, total = build_total(m, PlotOptions())
    assert total[1].text().plain == "● val 1 ↓1"


def test_a_metric_declared_min_shows_its_minimum(monkeypatch):
    fam = dataclasses.replace(TOY, metrics=("perplexity",), metric_directions={"perplexity": "min"})
    monkeypatch.setattr(
        "podium.engine.families.registry._LOADED", {"tests.families.ppl": fam}, raising=True
    )
    m = RunModel()
    m.family = "tests.families.ppl"
    m.metric_names = ["perplexity"]
    for step, ppl in ((10, 30.0), (20, 12.5), (30, 14.0)):
        m.apply([Scalars(step=step, epoch=1.0, wall=1.0, values={"val/perplexity": ppl})])
    _, legend, _ = build_heads(m, PlotOptions(head_index=0))
    assert legend[0].text().plain == "● perplexity 14 ↓12.5"
    # A family that does not import here (a remote run's): the defaults, a score.
    m.family = "tests.families.nope"
    _, legend, _ = build_heads(m, PlotOptions(head_index=0))
    assert legend[0].text().plain == "● perplexity 14 ↑30"
