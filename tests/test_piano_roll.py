"""The piano roll on fabricated MIDI: known notes land in known cells, in both resolutions."""

from __future__ import annotations

import pretty_midi
from textual.app import App, ComposeResult

from podium.tui.widgets.piano_roll import LABEL_WIDTH, PianoRoll, roll_lines, velocity_colour
from tests.tui_helpers import sync


def piece(*notes: tuple[int, float, float, int], bpm: float = 120.0) -> pretty_midi.PrettyMIDI:
    """Notes as (pitch, start s, end s, velocity) on one piano."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in notes]
    midi.instruments.append(piano)
    return midi


def test_one_semitone_per_row_with_velocity_as_shade_and_bar_lines():
    # 4 s at 120 bpm: two 4/4 bars; the bar line at 2.0 s is column 20 of 40.
    midi = piece((64, 0.0, 1.0, 127), (62, 1.0, 2.0, 20), (60, 3.0, 4.0, 70))
    lines = [t.plain for t in roll_lines(midi, LABEL_WIDTH + 40, 10)]
    assert len(lines) == 5  # E4 down to C4: the range, not the height
    assert [line[:LABEL_WIDTH] for line in lines] == [" E4 ", "D#4 ", " D4 ", "C#4 ", " C4 "]
    roll = [line[LABEL_WIDTH:] for line in lines]
    assert roll[0] == "█" * 10 + " " * 10 + "│" + " " * 19  # loud, first quarter; the bar line
    assert roll[2][10:20] == "░" * 10 and roll[2][:10] == "│" + " " * 9  # soft; bar 1 at 0 s
    assert roll[4][30:] == "▓" * 10  # mezzo-forte, last quarter
    assert roll[1] == ("│" + " " * 19) * 2  # no D#: only the bar lines


def test_a_wide_range_packs_two_pitch_bands_per_row_in_half_blocks():
    # Range 36..99 (64 semitones) into 8 rows: 16 bands of 4 semitones, two per row.
    midi = piece((99, 0.0, 1.0, 100), (36, 1.0, 2.0, 30), (38, 2.0, 3.0, 60), (41, 2.0, 3.0, 90))
    lines = roll_lines(midi, LABEL_WIDTH + 30, 8)
    plain = [t.plain for t in lines]
    assert len(plain) == 8
    top, bottom = plain[0][LABEL_WIDTH:], plain[-1][LABEL_WIDTH:]
    assert top[:10] == "▀" * 10 and top[10:].strip(" │") == ""  # 99: upper band of the top row
    assert bottom[10:20] == "▄" * 10  # 36 alone: lower band of the bottom row
    assert bottom[20:30] == "▀" * 10  # 38 (lower band) under 41 (upper band): one cell, two colours
    assert plain[-1].startswith(" C2 ")
    cell = [str(s.style) for s in lines[-1].spans if s.start <= LABEL_WIDTH + 25 < s.end]
    assert cell == [f"{velocity_colour(90)} on {velocity_colour(60)}"]


def test_nothing_to_draw_says_so():
    assert [t.plain for t in roll_lines(None, 40, 10)] == ["no notes"]
    assert [t.plain for t in roll_lines(pretty_midi.PrettyMIDI(), 40, 10)] == ["no notes"]
    assert [t.plain for t in roll_lines(piece((60, 0, 1, 80)), 5, 10)] == ["no notes"]


class RollApp(App):
    CSS = "PianoRoll { border: none; }"

    def compose(self) -> ComposeResult:
        yield PianoRoll()


@sync
async def test_the_widget_fits_its_size_and_redraws_on_show():
    app = RollApp()
    async with app.run_test(size=(44, 12)) as pilot:
        roll = app.query_one(PianoRoll)
        assert roll.render().plain == "no notes"
        roll.show(piece((72, 0.0, 2.0, 120), (49, 2.0, 4.0, 120)))
        await pilot.pause()
        lines = roll.render().plain.split("\n")
        assert len(lines) == 12 and all(len(line) == 44 for line in lines)  # 24 semitones, 2 a row
        assert lines[0][LABEL_WIDTH : LABEL_WIDTH + 20] == "▀" * 20  # C5 over the first half
        assert lines[-1][LABEL_WIDTH + 20 :] == "▄" * 20  # C#3 under the second half
