"""The dashboard shows any family through the family contract: a run of the toy family
(``tests/families/toy``: heads ``class`` and ``aux``, a validation metric ``accuracy``, a matrix
``confusion``, an epoch hook ``probe`` and a sampler with one option ``mood``) trained by
``podium train --headless``, then opened read-only (Pilot, 120x40).

This module is also a family of its own for one test (``family = "tests.test_tui_family"``):
``FAMILY`` is the toy without a sampler, to see ``g`` say so.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from podium.engine.runs import RunDir
from podium.engine.store import RunStore
from podium.tui.app import PodiumApp
from podium.tui.screens.matrix import MatrixScreen
from podium.tui.screens.modals import HelpScreen
from podium.tui.screens.preview import GenerateModal, PreviewScreen
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.heatmap import Heatmap
from podium.tui.widgets.panels import StatsPanel
from tests.families.toy import FAMILY as TOY
from tests.tui_helpers import ROOT, make_stored_run, sync, wait_for

SIZE = (120, 40)
TOY_PROFILE = ROOT / "tests" / "families" / "toy" / "toy.toml"
FAMILY = dataclasses.replace(TOY, name="mute", sampler=None, metrics=(), matrices=())
"""The toy family without a sampler (or metrics): this module's ``FAMILY``."""


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy run (4 epochs, a few seconds), trained once for this module."""
    runs = tmp_path_factory.mktemp("toy-runs")
    args = ["train", str(TOY_PROFILE), "--headless", "--name", "toy", "--runs-dir", str(runs)]
    proc = subprocess.run(
        [sys.executable, "-m", "podium", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return RunDir(runs / "toy")


def stored(run: RunDir):
    """(last step, val/accuracy points, the latest confusion matrix) from the run's store."""
    store = RunStore.open(run.db_path, readonly=True)
    try:
        last = store.last("train/loss")
        assert last is not None
        return int(last[0]), store.query("val/accuracy"), store.latest_matrix("confusion")
    finally:
        store.close()


def footer_keys(screen) -> list[str]:
    return [str(getattr(k, "description", "")) for k in screen.query("FooterKey")]


@sync
async def test_a_toy_run_shows_its_metric_matrix_hook_and_sampler(toy_run):
    last_step, accuracy, (matrix_step, confusion) = stored(toy_run)
    assert len(accuracy) >= 2 and confusion.rows == ("A", "B", "C")
    app = PodiumApp(root=toy_run.path.parent, profile_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        runs = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.live is None
        model = screen.model
        await wait_for(pilot, lambda: model.numbers.step == last_step, 15, "the history")
        await wait_for(pilot, lambda: "confusion" in model.matrices, 10, "the matrix")
        assert model.family == "tests.families.toy" and model.heads == ["aux", "class"]
        assert model.metrics == ["accuracy"] and list(model.hook_groups) == ["probe"]

        # The numbers panel: the latest metric and hook value, whatever the family.
        stats = str(screen.query_one(StatsPanel).render())
        assert f"accuracy {accuracy[-1][1] * 100:.0f}%" in stats and "confidence" in stats
        # m is offered (footer and help) because the run has a matrix metric.
        await wait_for(pilot, lambda: "Matrix" in footer_keys(screen), 10, "m in the footer")
        assert screen.check_action("show_matrix", ()) is True

        # h: all heads, each head, the accuracy metric, the probe hook group, all heads again.
        heads = screen.query_one("#heads-panel")
        titles = []
        for _ in range(5):
            await pilot.press("h")
            titles.append(heads.border_title)
            if "accuracy" in heads.border_title:
                assert [s.label for s in heads.plot.series] == ["accuracy"]
                assert [e.name for e in heads.legend.entries] == ["accuracy"]
                assert len(heads.plot.series[0].xs) == len(accuracy)
                assert heads.legend.entries[0].last == pytest.approx(accuracy[-1][1])
        assert titles[0].startswith("head aux (1/2)") and titles[1].startswith("head class (2/2)")
        assert titles[2] == "val accuracy · each validation (h: next)"
        # The hook group's title is the family's own (its EpochHook's), with the key hint.
        assert titles[3] == "probe · mean top-class probability on fixed points (h: next)"
        assert titles[4].startswith("heads · train · all 2")

        # m: the latest confusion matrix as a heatmap, with its labels and step.
        await pilot.press("m")
        modal = app.screen
        assert isinstance(modal, MatrixScreen)
        title = str(modal.query_one("#matrix-title").render())
        assert "confusion" in title and f"step {matrix_step}" in title and "3 x 3" in title
        drawn = modal.query_one(Heatmap).text().splitlines()
        assert drawn[0].split() == ["A", "B", "C"]
        for label, line, values in zip(confusion.rows, drawn[1:4], confusion.values, strict=True):
            assert line.split()[0] == label
            assert [int(t) for t in line.split() if t.isdigit()] == [int(v) for v in values]
        await pilot.press("escape")
        assert app.screen is screen

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "matrix metric as a heatmap" in str(app.screen.query_one("#help-text").render())
        await pilot.press("escape")

        # g: the form has the toy sampler's one option, mood, and no CP field.
        await pilot.press("g")
        form = app.screen
        assert isinstance(form, GenerateModal)
        ids = [w.id for w in form.query("Input")]
        assert ids == ["f-checkpoint", "f-mood", "f-bars", "f-temperature", "f-top-p", "f-seed"]
        assert not form.query("#f-emotion") and not form.query("#f-key")
        mood = form.query_one("#f-mood")
        assert app.focused is mood and mood.placeholder == "calm or busy (blank: drawn by the seed)"
        assert form.query_one("#f-checkpoint").value == "latest"  # not live: nothing trains
        mood.value = "angry"
        await pilot.press("enter")
        error = str(form.query_one("#form-error").render())
        assert error == "mood: one of calm, busy (got angry)" and app.screen is form
        mood.value = "BUSY"
        form.query_one("#f-bars").value = "2"
        form.query_one("#f-seed").value = "4"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen), 60, "the preview")
        await wait_for(pilot, lambda: app.screen.current is not None, 20, "the sample")
        path = app.screen.current
        assert path == toy_run.path / "samples" / "latest-busy-seed4.mid"
        assert any("preview written" in n and "(busy: ended by" in n for n in app.notices)


@sync
async def test_a_family_without_a_sampler_says_so_and_has_no_matrix_key(tmp_path):
    run = make_stored_run(tmp_path, "mute", steps=30, family=__name__, checkpoints=False)
    app = PodiumApp(root=tmp_path, profile_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run)
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.numbers.step == 30, 10, "the history")
        await pilot.press("g")
        assert app.screen is screen and app.notices[-1] == "family mute has no sampler"
        await pilot.press("m")
        assert app.screen is screen and "Matrix" not in footer_keys(screen)
