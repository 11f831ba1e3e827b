"""The run model (events and stored history in, plot series out), the event inbox, and reading a
stored run back, without an app."""

from __future__ import annotations

import math
import threading

import pytest

from podium.engine.events import (
    CheckpointSaved,
    EvalMetrics,
    Message,
    StateChanged,
    StepMetrics,
    event_to_dict,
)
from podium.tui.history import read_history, run_facts, run_row
from podium.tui.live import EventInbox
from podium.tui.model import RunModel, Series, ema, event_from_payload
from tests.tui_helpers import HEADS, make_stored_run


def step_event(step: int, loss: float = 1.0, wall: float = 0.0) -> StepMetrics:
    return StepMetrics(
        step=step,
        epoch=step / 10,
        wall=wall or 1000.0 + step,
        loss=loss,
        losses={"a": loss / 2, "b": loss / 2},
        lr=1e-3,
        grad_norm=0.5,
        tokens_per_s=100.0,
        samples_per_s=2.0,
        eta_s=60.0,
    )


def test_events_fill_series_numbers_and_the_log():
    m = RunModel()
    m.apply([StateChanged(step=0, wall=999.0, state="running")])
    m.apply([step_event(s, loss=10.0 - s) for s in range(1, 6)])
    m.apply(
        [
            EvalMetrics(
                step=5,
                epoch=0.5,
                wall=1005.0,
                loss=4.5,
                losses={"a": 2.0, "b": 2.5},
                best=4.5,
                patience_left=3,
            ),
            CheckpointSaved(
                step=5,
                epoch=0.5,
                wall=1005.0,
                name="best",
                path="x",
                kind="best",
                size=1 << 20,
                val_loss=4.5,
            ),
            Message(step=5, wall=1006.0, level="info", text="learning rate set", data={"lr": 5e-4}),
        ]
    )
    assert m.state == "running" and m.heads == ["a", "b"]
    assert m.numbers.step == 5 and m.numbers.lr == 5e-4 and m.numbers.patience_left == 3
    assert m.series["train/loss"].values == [9.0, 8.0, 7.0, 6.0, 5.0]
    assert m.series["train/loss"].best == 5.0 and m.series["val/loss/b"].last == 2.5
    assert m.checkpoints_version == 1
    texts = [e.text for e in m.log]
    assert texts[0] == "state running"
    assert "val 4.5000 new best · patience 3" in texts and "saved best (1.0 MiB)" in texts
    xs, _ = m.xy("train/loss", "wall")
    assert xs[0] == 2.0  # seconds since the first event (the state change at wall 999)


def test_a_step_seen_again_replaces_the_newer_points():
    s = Series()
    for step in range(1, 11):
        s.append(step, step, float(step))
    s.append(6, 60, 0.5)  # a resumed run re-trains from step 6
    assert s.steps == [1, 2, 3, 4, 5, 6] and s.values[-1] == 0.5 and s.best == 0.5


def test_decimation_keeps_spikes_and_bounds_memory():
    m = RunModel(max_points=50)
    events = [step_event(s, loss=1.0) for s in range(1, 2001)]
    events[1234] = step_event(1235, loss=99.0)
    events[1500] = step_event(1501, loss=-5.0)
    m.apply(events)
    train = m.series["train/loss"]
    assert len(train) <= 4 * 50
    assert max(train.values) == 99.0 and min(train.values) == -5.0
    assert train.steps == sorted(train.steps) and train.steps[-1] == 2000


def test_ema_decays_per_step_and_passes_nan_through():
    assert ema([1, 2, 3], [1.0, 1.0, 1.0], 0.9) == [1.0, 1.0, 1.0]
    dense = ema(list(range(1, 101)), [0.0] * 50 + [1.0] * 50, 0.9)
    sparse = ema(list(range(1, 101, 10)), [0.0] * 5 + [1.0] * 5, 0.9)
    # One point per 10 steps decays by 0.9**10: the same shape as every step, at those steps.
    assert abs(dense[90] - sparse[9]) < 0.01
    out = ema([1, 2, 3], [1.0, math.nan, 3.0], 0.5)
    assert math.isnan(out[1]) and 1.0 < out[2] < 3.0
    assert ema([1, 2], [1.0, 2.0], 0.0) == [1.0, 2.0]


def test_stored_events_round_trip_through_their_json_form():
    for event in (step_event(3), StateChanged(step=1, wall=2.0, state="failed", reason="x")):
        assert event_from_payload(event_to_dict(event)) == event
    assert event_from_payload({"type": "Nope"}) is None
    assert event_from_payload({"type": "StateChanged", "bogus": 1}) is None


def test_inbox_wakes_once_per_batch_from_any_thread():
    wakes = []
    inbox = EventInbox(lambda: wakes.append(1), maxlen=100)
    threads = [
        threading.Thread(target=lambda: [inbox(step_event(i)) for i in range(50)]) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wakes) == 1 and len(inbox.drain()) == 100
    inbox(step_event(1))
    assert len(wakes) == 2
    for i in range(200):
        inbox(step_event(i))
    assert inbox.dropped == 101 and len(inbox.drain()) == 100


def test_a_stored_run_reads_back_downsampled(tmp_path):
    run = make_stored_run(tmp_path, steps=1000)
    h = read_history(run.db_path, max_points=100)
    assert set(h.points) == {"train/loss", "val/loss"} | {
        f"{k}/loss/{head}" for k in ("train", "val") for head in HEADS
    }
    by_step, by_wall = h.points["train/loss"]
    assert 50 <= len(by_step) <= 100 and len(by_step) == len(by_wall)
    assert by_wall[0][0] == 1_700_000_000.0 + by_step[0][0] * 0.5  # the same points, wall x
    assert h.last["lr"] == 1e-3 and [type(e).__name__ for e in h.events][-1] == "StateChanged"
    m = RunModel()
    m.load_history(h.points, last=h.last)
    m.load_events(h.events)
    assert m.numbers.step == 1000 and m.heads == sorted(HEADS) and m.numbers.best_val is not None
    cut = read_history(run.db_path, max_points=100, end_step=400)
    assert max(s for s, _ in cut.points["train/loss"][0]) <= 400
    assert all(e.step <= 400 for e in cut.events)
    facts = run_facts(run)
    assert (facts.device, facts.total_steps, facts.steps_per_epoch) == ("cpu", 1000, 10)
    row = run_row(run)
    assert (row.state, row.step, row.profile, row.host) == ("finished", 1000, "demo", "testhost")
    assert row.best_val == min(v for _, v in h.points["val/loss"][0])


def test_scalars_events_become_series_and_the_latest_hook_numbers():
    from podium.engine.events import Scalars
    from podium.tui.model import RunModel

    m = RunModel()
    m.apply(
        [Scalars(step=46, epoch=1.0, wall=1.0, values={"cond/both": 0.5, "cond/valence": 0.75})]
    )
    m.apply([Scalars(step=92, epoch=2.0, wall=2.0, values={"cond/both": 0.8125})])
    assert m.series["cond/both"].steps == [46, 92] and m.series["cond/both"].values[-1] == 0.8125
    assert m.numbers.latest == {"cond/both": 0.8125, "cond/valence": 0.75}
    assert m.numbers.hook_groups() == {"cond": {"cond/both": 0.8125, "cond/valence": 0.75}}
    assert m.hook_groups == {"cond": ["cond/both", "cond/valence"]}


def test_eval_metrics_and_matrices_are_kept_latest_first():
    from podium.engine.metrics import Matrix

    m = RunModel()
    first = Matrix.of(["a", "b"], ["a", "b"], [[3, 1], [0, 4]])
    later = Matrix.of(["a", "b"], ["a", "b"], [[4, 0], [0, 4]])

    def ev(step: int, acc: float, matrix: Matrix) -> EvalMetrics:
        return EvalMetrics(
            step=step,
            epoch=step / 10,
            wall=1000.0 + step,
            loss=1.0,
            losses={"a": 0.5},
            best=1.0,
            patience_left=None,
            metrics={"accuracy": acc},
            matrices={"confusion": matrix},
        )

    m.apply([ev(10, 0.5, first), ev(20, 0.75, later)])
    assert m.series["val/accuracy"].values == [0.5, 0.75]
    assert m.numbers.latest == {"val/accuracy": 0.75} and m.numbers.metrics() == {"accuracy": 0.75}
    assert m.metrics == ["accuracy"] and m.matrix_keys == ["confusion"]
    assert m.matrices["confusion"] == (20, later)
    m.load_history({}, matrices={"confusion": (10, first)})  # an older stored one: kept newer
    assert m.matrices["confusion"] == (20, later)
    # The JSON form (the store's rows, the socket's lines) carries the matrices and the metrics.
    back = event_from_payload(event_to_dict(ev(30, 1.0, first)))
    assert back == ev(30, 1.0, first)
    fresh = RunModel()
    fresh.load_events([back])
    assert fresh.matrices["confusion"] == (30, first)


def test_every_event_type_survives_the_json_form():
    from podium.engine.events import CheckpointDeleted, Scalars

    events = [
        step_event(3),
        StateChanged(step=1, wall=2.0, state="failed", reason="x"),
        Scalars(step=46, epoch=1.0, wall=1.0, values={"cond/both": 0.5}),
        CheckpointDeleted(step=5, wall=3.0, name="step-5"),
        Message(step=5, wall=1006.0, level="info", text="lr", data={"lr": 5e-4}),
    ]
    for event in events:
        assert event_from_payload(event_to_dict(event)) == event, event


def test_the_heads_plot_cycles_on_to_metrics_and_hook_groups():
    from podium.engine.events import Scalars
    from podium.tui.model import RunModel
    from podium.tui.widgets.loss_panel import PlotOptions, build_heads, extra_views, plot_views

    m = RunModel()
    m.heads = ["type", "pitch"]
    opts = PlotOptions()
    assert extra_views(m) == 0
    cycle = []
    for _ in range(3):
        opts = opts.next_heads(2, extra_views(m))
        cycle.append(opts.head_index)
    assert cycle == [0, 1, -1]  # all heads, each head, all again
    m.family = "cp"
    m.apply([Scalars(step=46, epoch=1.0, wall=1.0, values={"cond/both": 0.5, "cond/valence": 1})])
    m.metric_names = ["accuracy"]  # declared: its view is there before its first value
    assert [(v.kind, v.name) for v in plot_views(m)] == [
        ("head", "type"),
        ("head", "pitch"),
        ("metric", "accuracy"),
        ("group", "cond"),
    ]
    views = []
    opts = PlotOptions()
    for _ in range(5):
        opts = opts.next_heads(2, extra_views(m))
        views.append(opts.head_index)
    assert views == [0, 1, 2, 3, -1]
    series, legend, title = build_heads(m, PlotOptions(head_index=2))
    assert title.startswith("val accuracy") and legend[0].name == "accuracy"
    assert series[0].xs == [] and legend[0].last is None
    series, legend, title = build_heads(m, PlotOptions(head_index=3))
    # The CP family's title comes from podium.tui.families.cp; the view itself is generic.
    assert title == "conditioning check · fraction of samples matching (h: next)"
    assert [s.label for s in series] == ["cond/both", "cond/valence"]
    assert legend[0].name == "both" and legend[0].last == 0.5
    assert list(series[0].ys) == [0.5]
    m.family = "tests.families.nope"  # no dashboard module, no importable family: generic
    assert build_heads(m, PlotOptions(head_index=3))[2] == "cond · every few epochs (h: next)"


def test_every_heads_accuracy_is_one_plot_beside_the_losses():
    from podium.engine.events import EvalMetrics
    from podium.tui.model import RunModel
    from podium.tui.widgets.loss_panel import PlotOptions, build_heads, plot_views

    m = RunModel()
    m.heads = ["type", "root", "bass"]
    m.metric_names = ["type/accuracy", "root/accuracy", "bass/accuracy", "type/top3", "f1"]
    for step, acc in ((10, 0.5), (20, 0.75)):
        values = {"type/accuracy": acc, "root/accuracy": acc + 0.1, "bass/accuracy": acc + 0.2}
        m.apply([EvalMetrics(step=step, epoch=1.0, wall=1.0, loss=1.0, losses={}, best=1.0,
                             patience_left=None, metrics={**values, "f1": 0.1})])  # fmt: skip
    views = [(v.kind, v.name) for v in plot_views(m)]
    # One view per measure two or more heads share, before the single metrics; "top3" (one
    # head) and "f1" (no head) stay single.
    assert views[3:5] == [("metrics", "accuracy"), ("metric", "type/accuracy")]
    assert ("metrics", "top3") not in views
    series, legend, title = build_heads(m, PlotOptions(head_index=3))
    assert title == "val accuracy · every head (h: next)"
    assert [s.label for s in series] == ["type/accuracy", "root/accuracy", "bass/accuracy"]
    assert [e.name for e in legend] == ["type", "root", "bass"]
    assert list(series[1].ys) == pytest.approx([0.6, 0.85]) and legend[2].last == pytest.approx(
        0.95
    )


def test_the_numbers_panel_lists_metrics_and_hook_groups_generically():
    from podium.engine.events import Scalars
    from podium.tui.widgets.panels import reading_rows

    m = RunModel()
    m.family = "cp"
    m.apply([Scalars(step=46, epoch=1.0, wall=1.0, values={"cond/both": 0.8, "cond/valence": 1})])
    m.numbers.latest["val/perplexity"] = 12.5
    m.numbers.latest["val/accuracy"] = 0.25
    assert reading_rows(m) == [
        ("metrics", "accuracy 25% · perplexity 12.5"),
        ("condition", "both 80% · valence 100%"),
    ]
