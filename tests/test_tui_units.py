"""One formatter for bytes and one for counts: the checkpoint table said ``4.2M`` where the event
log said ``4.4 MB`` for the same file. Bytes are binary with IEC names everywhere in the
dashboard (the base GPU memory is reported in), counts take an SI suffix and their unit."""

from __future__ import annotations

import math

from textual.app import App, ComposeResult

from podium.engine.checkpoints import CheckpointInfo
from podium.engine.events import CheckpointSaved
from podium.tui import format as fmt
from podium.tui.model import describe
from podium.tui.widgets.checkpoints import CheckpointTable
from tests.tui_helpers import sync

MIB = 1 << 20
GIB = 1 << 30


def test_bytes_read_in_binary_units_with_their_names():
    assert fmt.size(512) == "512 B" and fmt.size(0) == "0 B"
    assert fmt.size(4_400_000) == "4.2 MiB"
    assert fmt.size(23.5 * GIB) == "23.5 GiB" and fmt.size(300 * MIB) == "300 MiB"
    assert fmt.size(3 << 40) == "3.0 TiB" and fmt.size(1536) == "1.5 KiB"
    assert fmt.size(None) == fmt.size(math.nan) == fmt.size(-1) == "–"
    # Used of total, for narrow gauges: two digits, one unit (the total's).
    assert fmt.size_pair(70 * GIB, 80 * GIB) == "70/80 GiB"
    assert fmt.size_pair(GIB // 2, 16 * GIB) == "0.5/16 GiB"
    assert (
        fmt.size_pair(None, GIB) == "–/1.0 GiB"
        and fmt.size_pair(GIB, 3 * GIB) == "1.0/3.0 GiB"
        and fmt.size_pair(5, None) == "5 B/–"
    )


def test_counts_take_an_si_suffix_and_their_unit():
    assert fmt.count(4_200_000, "params") == "4.2M params"
    assert fmt.count(39_240_000, "params") == "39.2M params"
    assert fmt.count(7e9, "params") == "7.0B params" and fmt.count(950, "params") == "950 params"
    assert fmt.count(12_345) == "12.3k" and fmt.count(-5e6) == "-5.0M"
    assert fmt.count(None, "params") == "– params"


class TableApp(App):
    def compose(self) -> ComposeResult:
        yield CheckpointTable()


@sync
async def test_the_checkpoint_table_and_the_event_log_give_a_size_the_same_way():
    size = 4_400_000
    info = CheckpointInfo(
        name="latest",
        step=300,
        epoch=30.0,
        wall=0.0,
        kind="latest",
        val_loss=3.5,
        profile_hash="x",
        size=size,
    )
    app = TableApp()
    async with app.run_test(size=(100, 10)) as pilot:
        table = app.query_one(CheckpointTable)
        table.show([info])
        await pilot.pause()
        cell = table.get_cell("latest", "size")
    saved = CheckpointSaved(
        step=300,
        epoch=30.0,
        wall=0.0,
        name="latest",
        path="p",
        kind="latest",
        size=size,
        val_loss=3.5,
    )
    entry = describe(saved)
    assert entry is not None
    assert cell.plain == "4.2 MiB" and "(4.2 MiB)" in entry.text


def test_the_headless_console_gives_a_checkpoint_size_as_the_dashboard_does():
    """The engine's line sink (``podium train --headless``, train.log) said ``4.4 MB``."""
    import io

    from podium.engine.sinks import LineSink

    out = io.StringIO()
    event = CheckpointSaved(
        step=7,
        epoch=1.0,
        wall=0.0,
        name="latest",
        path="x",
        kind="latest",
        size=4_400_000,
        val_loss=None,
    )
    LineSink(out)(event)
    assert out.getvalue().strip() == "checkpoint latest at step 7 (4.2 MiB)"
    assert fmt.size(event.size) in describe(event).text
