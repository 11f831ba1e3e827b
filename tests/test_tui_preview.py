"""Previews from the dashboard: g opens the form, a worker generates, the preview screen shows the
piano roll, the statistics and the run's samples; from the live weights while training goes on."""

from __future__ import annotations

import pretty_midi

from podium.engine.runs import RunDir
from podium.tui.app import PodiumApp
from podium.tui.screens.preview import GenerateModal, PreviewScreen, parse_form
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.piano_roll import PianoRoll, roll_lines
from tests.tui_helpers import start_request, sync, wait_for

SIZE = (120, 40)


@sync
async def test_preview_from_the_live_weights_while_training_goes_on(tmp_path):
    app = PodiumApp(root=tmp_path, request=start_request(tmp_path, name="pv"))
    async with app.run_test(size=SIZE) as pilot:
        (live,) = app.live_runs.values()
        await wait_for(pilot, lambda: live.model.numbers.step >= 3, 90, "a few steps")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("g")
        modal = app.screen
        assert isinstance(modal, GenerateModal)
        assert modal.query_one("#f-checkpoint").value == "live"
        modal.query_one("#f-emotion").value = "Q4"
        modal.query_one("#f-key").value = "G:maj"
        modal.query_one("#f-bars").value = "2"
        modal.query_one("#f-seed").value = "11"
        await pilot.press("enter")
        step_then = live.model.numbers.step
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen), 60, "the preview")
        preview = app.screen
        await wait_for(pilot, lambda: preview.current is not None, 20, "the sample to load")
        path = preview.current
        assert path.parent == RunDir(tmp_path / "pv").path / "samples"
        assert path.name.startswith("live-step") and "Q4-Gmaj-seed11" in path.name
        assert any(
            n.startswith("preview written") and "(Q4 G:maj: ended by" in n for n in app.notices
        )
        pretty_midi.PrettyMIDI(str(path))
        stats = str(preview.query_one("#preview-stats").render())
        step = int(path.name.removeprefix("live-step").split("-")[0])
        # Which weights, and the key asked beside the key the analyser hears.
        assert f"from live weights (step {step}) · seed 11 · emotion Q4 · key requested G:maj · " \
            "detected " in stats, stats  # fmt: skip
        assert "notes" in stats and "ended by " in stats
        assert preview.query_one("#samples").option_count == 1
        await wait_for(pilot, lambda: live.model.numbers.step > step_then, 30, "training to go on")
        await pilot.press("escape")
        assert app.screen is screen
        live.request_stop("test over")
        await wait_for(pilot, lambda: not live.training, 60, "the stop")

        # From a checkpoint of the (now stopped) run, chosen in the form.
        await pilot.press("g")
        modal = app.screen
        assert modal.query_one("#f-checkpoint").value == "latest"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PreviewScreen), 60, "preview 2")
        await wait_for(pilot, lambda: app.screen.current is not None, 20, "the sample")
        assert app.screen.current.name.startswith("latest-")
        assert app.screen.query_one("#samples").option_count == 2
        stats = str(app.screen.query_one("#preview-stats").render())
        assert "from checkpoint latest (step " in stats and "key drawn " in stats, stats


def test_the_form_checks_its_numbers_and_the_roll_draws_notes():
    from podium.engine.families.registry import ConditionOption

    form = parse_form({"checkpoint": "", "bars": "4", "temperature": "0.8", "seed": "3"})
    assert (form.checkpoint, form.bars, form.temperature, form.seed) == ("latest", 4, 0.8, 3)
    assert form.conditioning == {}
    for bad in ({"bars": "0"}, {"top-p": "1.5"}, {"seed": "x"}):
        try:
            parse_form(bad)
        except ValueError as exc:
            assert next(iter(bad)) in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")
    # The family's options: a closed set is checked (any case, spelled as the sampler does).
    options = (
        ConditionOption(name="emotion", help="Q1..Q4", choices=("Q1", "Q2", "Q3", "Q4")),
        ConditionOption(name="key", help="e.g. C:maj"),
        ConditionOption(name="seed", help="an option named like a shared field"),
    )
    form = parse_form({"emotion": "q2", "key": " a:min ", "opt-seed": "x", "seed": "5"}, options)
    assert form.conditioning == {"emotion": "Q2", "key": "a:min", "seed": "x"} and form.seed == 5
    assert parse_form({}, options).conditioning == {"emotion": "", "key": "", "seed": ""}
    try:
        parse_form({"emotion": "Q5"}, options)
    except ValueError as exc:
        assert str(exc) == "emotion: one of Q1, Q2, Q3, Q4 (got Q5)"
    else:
        raise AssertionError("Q5 was accepted")
    midi = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [
        pretty_midi.Note(velocity=120, pitch=72, start=0.0, end=1.0),
        pretty_midi.Note(velocity=20, pitch=60, start=1.0, end=2.0),
    ]
    midi.instruments.append(piano)
    lines = [line.plain for line in roll_lines(midi, 24, 13)]
    assert lines[0].startswith(" C5") and lines[-1].startswith(" C4")
    assert lines[0][4:14] == "█" * 10 and lines[0][14:].strip(" │") == ""  # loud, first half
    assert lines[-1][14:24] == "░" * 10  # soft, second half
    assert PianoRoll().midi is None


def test_the_preview_says_where_a_sample_came_from_and_why_it_ended_short():
    from podium.engine.music_stats import MusicStats
    from podium.tui.screens.preview import describe_meta

    stats = MusicStats(40, 9.5, 50, 80, 1.2, 4.2, "E:maj", "maj", 120.0)
    meta = {
        "checkpoint": "latest", "step": 120, "seed": 3, "ended": "max_len",
        "conditioning": {"emotion": "Q1", "key": "A:min"}, "drawn": [],
        "note": "4 of 8 bars: the model holds at most 256 tokens (model.max_len; 248 tokens made 4 bars)",
    }  # fmt: skip
    first, why = (line.plain for line in describe_meta(meta, stats))
    assert first == "from checkpoint latest (step 120) · seed 3 · emotion Q1 · key requested " \
        "A:min · detected E:maj"  # fmt: skip
    assert why == f"ended by max_len: {meta['note']}"
    meta |= {"drawn": ["key"], "note": "", "ended": "bars", "step": None}
    first, why = (line.plain for line in describe_meta(meta, stats))
    assert "checkpoint latest · seed 3 · emotion Q1 · key drawn A:min · detected E:maj" in first
    assert why == "ended by bars"
    assert "detected key E:maj" in stats.line()  # the analyser's own line says so too
