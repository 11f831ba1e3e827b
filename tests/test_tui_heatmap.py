"""The matrix heatmap at 80x24: a 12-class confusion matrix whole and readable, a 32-class one
compact (every column, the rows numbered), summarised in words and scrolled; ``m`` moves to
the next head's matrix (Pilot, the real stylesheet)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App

import podium.tui as tui_package
from podium.engine.families.chords.labels import NOTE_NAMES, TYPES
from podium.engine.metrics import Matrix
from podium.tui.model import RunModel
from podium.tui.screens.matrix import MatrixScreen
from podium.tui.widgets.heatmap import Heatmap, compact_lines, fits, summary_line
from tests.tui_helpers import sync, wait_for

CSS = Path(tui_package.__file__).parent / "podium.tcss"


def confusion(labels, confused: dict[tuple[int, int], int]) -> Matrix:
    """A confusion matrix: 20 right per class, plus the given (true, predicted) counts."""
    n = len(labels)
    values = [[20 if i == j else 0 for j in range(n)] for i in range(n)]
    for (i, j), count in confused.items():
        values[i][j] = count
    return Matrix.of(labels, labels, values)


class MatrixApp(App):
    CSS_PATH = str(CSS)

    def __init__(self, model: RunModel) -> None:
        super().__init__()
        self.model = model

    def on_mount(self) -> None:
        self.push_screen(MatrixScreen(self.model))


def test_a_32_class_matrix_is_drawn_compact_and_summarised():
    t = TYPES.index
    types = confusion(TYPES, {(t("maj6"), t("min7")): 9, (t("dim7"), t("aug")): 5})
    assert not fits(types, 76)  # glyph cells would cut columns in an 80-column dialog
    lines = [t.plain for t in compact_lines(types)]
    assert len(lines) == 2 + 32 and max(len(line) for line in lines) <= 76
    assert lines[0].strip() == "1111111111222222222233" and lines[1].strip().startswith("0123")
    assert lines[2 + t("maj6")].split()[:2] == [str(t("maj6")), "maj6"]
    row = lines[2 + t("maj6")][-32:]  # maj6: its own column darkest, the min7 column shaded
    assert row[t("maj6")] == "█" and row[t("min7")] not in (" ", "█") and row.count(" ") == 30
    summary = summary_line(types).plain
    assert summary.startswith("diagonal 98%") and "maj6→min7 9 · dim7→aug 5" in summary
    assert summary_line(confusion(NOTE_NAMES, {})) is None  # 12 classes read cell by cell
    per_class = Matrix.of(
        TYPES, ("precision", "recall", "f1"), [[1.0, 1.0, 1 - i / 100] for i in range(32)]
    )
    assert summary_line(per_class).plain.startswith("lowest f1: min13 0.69 · maj13 0.70 · 13 0.71")


@sync
async def test_the_heatmap_screen_fits_80x24_one_head_at_a_time():
    roots = confusion(NOTE_NAMES, {(0, 7): 3, (9, 0): 2})
    types = confusion(TYPES, {(TYPES.index("maj6"), TYPES.index("min7")): 9})
    model = RunModel(matrix_names=["root/confusion", "type/confusion"])
    model.set_matrices({"root/confusion": (120, roots), "type/confusion": (120, types)})
    app = MatrixApp(model)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MatrixScreen), 5, "the screen")
        screen = app.screen
        heatmap = screen.query_one(Heatmap)
        await pilot.pause()
        # 12 classes: every cell with its number, no summary, nothing scrolls.
        title = str(screen.query_one("#matrix-title").render())
        assert "root/confusion" in title and "step 120" in title and "(1/2)" in title
        drawn = heatmap.text().splitlines()
        assert drawn[0].split() == list(NOTE_NAMES)
        assert [int(t) for t in drawn[1].split()[1:] if t.isdigit()][:8] == [
            20,
            0,
            0,
            0,
            0,
            0,
            0,
            3,
        ]
        assert not screen.query_one("#matrix-summary").display
        dialog = screen.query_one(".dialog")
        assert dialog.region.right <= 80 and dialog.region.bottom <= 24
        assert heatmap.region.width >= max(len(line) for line in drawn)

        await pilot.press("m")  # the next head: 32 types, compact, summarised, scrolled
        await pilot.pause()
        title = str(screen.query_one("#matrix-title").render())
        assert "type/confusion" in title and "32 x 32" in title and "(2/2)" in title
        summary = screen.query_one("#matrix-summary")
        assert summary.display and "maj6→min7 9" in str(summary.render())
        scroll = screen.query_one("#matrix-scroll")
        assert dialog.region.bottom <= 24 and scroll.region.height < 35
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == 0
        assert "↑↓ scroll" in str(screen.query_one("#matrix-hint").render())
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: scroll.scroll_y > 0, 5, "the heatmap to scroll")
        await pilot.press("m")  # back to the roots
        await pilot.pause()
        assert "root/confusion" in str(screen.query_one("#matrix-title").render())
