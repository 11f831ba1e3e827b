"""The home screen: runs under the runs root, the profiles one can start, and the GPU panel.

Enter on a run opens its run screen (live here, or read from its store); Enter on a profile opens
the short form that starts a run. ``m`` marks runs and ``c`` overlays the marked runs' loss curves
(``podium.tui.screens.compare``). The runs table is re-read in a thread worker every few seconds while
the screen is shown (each row opens the run's store). The GPU panel follows the app's GPU
monitor (``podium.tui.widgets.gpu_panel``). Runs waiting in the user's GPU queue for this runs
root (``podium queue``) head the table as ``queued``, with what they wait for.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, OptionList, Static
from textual.widgets.option_list import Option

from podium.engine.queue.store import Entry, Queue
from podium.engine.runs import RunDir, list_runs
from podium.tui import format as fmt
from podium.tui.history import RunRow, row_signature, run_row
from podium.tui.screens.compare import CompareScreen
from podium.tui.screens.new_run import NewRunModal
from podium.tui.widgets.footer import PodiumFooter
from podium.tui.widgets.gpu_panel import GpuPanel
from podium.tui.widgets.panels import state_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REFRESH_S = 3.0
MARK = "✓ "
"""Put before a marked run's id in the runs table."""


@dataclass(frozen=True)
class ProfileEntry:
    path: Path
    name: str
    family: str
    description: str
    seed: int | None


def profile_dirs() -> list[Path]:
    """``./profiles`` and the ``profiles/`` directory beside the installed package, deduplicated."""
    dirs = [Path.cwd() / "profiles", Path(__file__).resolve().parents[2] / "profiles"]
    seen: set[Path] = set()
    out = []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(d)
    return out


def find_profiles(dirs: list[Path] | None = None) -> list[ProfileEntry]:
    """Profiles found in ``dirs``: name, family and description from the TOML's top keys."""
    entries = []
    seen: set[Path] = set()
    for d in profile_dirs() if dirs is None else dirs:
        for path in sorted(d.glob("*.toml")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                entries.append(ProfileEntry(path, path.stem, "?", f"unreadable: {exc}", None))
                continue
            seed = raw.get("train", {}).get("seed")
            entries.append(
                ProfileEntry(
                    path=path,
                    name=str(raw.get("name", path.stem)),
                    family=str(raw.get("family", "?")),
                    description=str(raw.get("description", "")),
                    seed=seed if isinstance(seed, int) else None,
                )
            )
    return entries


class RunsTable(DataTable):
    """The runs table: a ``DataTable`` that repaints its rows when its column widths change.

    Textual's DataTable measures column widths in an idle pass after rows are added, but keeps
    rows it already rendered (cached under an unchanged update counter) at the old widths, so a
    table filled before its first idle pass kept header-wide columns ("fix" for "fixture").
    """

    BINDINGS: ClassVar[list[BindingType]] = []
    """None of its own (DataTable's still apply); keeps help and the palette listing the
    screen's keys only, as for the plain DataTable."""
    _widths: tuple[int, ...] = ()

    def on_idle(self) -> None:
        widths = tuple(c.content_width for c in self.columns.values())
        if widths != self._widths:
            self._widths = widths
            self.notify_style_update()  # drops the rendered-row caches and repaints


@dataclass
class RunsLoaded(Message):
    rows: list[RunRow]
    queued: list[Entry]


QUEUE_KEY = "queue-"
"""Row keys of queued entries in the runs table (run ids cannot start with it: no run dir)."""


def queued_for(root: Path) -> list[Entry]:
    """The user's queue entries that will become runs under ``root`` and are not runs yet."""
    try:
        here = str(root.resolve())
        return [e for e in Queue().waiting() if e.runs_dir == here]
    except OSError:
        return []  # an unreadable state directory leaves the runs table as it is


class HomeScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_run", "New run"),
        Binding("r", "refresh", "Refresh"),
        Binding("m", "toggle_mark", "Mark", tooltip="Mark or unmark the run (for compare)"),
        Binding("c", "compare", "Compare", tooltip="Overlay the loss curves of the marked runs"),
        Binding("tab", "focus_next", "Next panel", show=False),
    ]
    HELP_KEYS = (("enter", "Open the run under the cursor, or start a run of the chosen profile"),)
    """Keys the tables handle themselves, for help (?)."""

    def __init__(self, root: Path, *, profile_dirs: list[Path] | None = None) -> None:
        super().__init__()
        self.root = root
        self.profile_dirs = profile_dirs
        self.rows: list[RunRow] = []
        self.queued: list[Entry] = []
        self.profiles: list[ProfileEntry] = []
        self._row_cache: dict[Path, tuple[tuple, RunRow]] = {}
        self._shown: tuple | None = None
        self.marked: list[str] = []
        """Ids of the marked runs, in the order they were marked (their colours in compare)."""

    def compose(self) -> ComposeResult:
        yield Static(id="home-title")
        runs = RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        runs.border_title = "runs (Enter opens · m marks · c compares)"
        yield runs
        with Horizontal(id="home-bottom"):
            profiles = OptionList(id="profiles")
            profiles.border_title = "profiles (Enter starts a run)"
            yield profiles
            gpu = GpuPanel(id="gpu-panel")
            gpu.border_title = "GPUs"
            yield gpu
        yield PodiumFooter()

    def on_mount(self) -> None:
        title = Text("podium", style="bold")
        title.append(f"  runs directory {self.root.as_posix().rstrip('/')}/", style="dim")
        self.query_one("#home-title", Static).update(title)
        table = self.query_one("#runs", DataTable)
        for label in ("run", "profile", "state", "step", "best val", "device", "started", "host"):
            table.add_column(label, key=label)
        self.profiles = find_profiles(self.profile_dirs)
        options = self.query_one("#profiles", OptionList)
        name_w = max((len(p.name) for p in self.profiles), default=0)
        family_w = max((len(p.family) for p in self.profiles), default=0)
        for p in self.profiles:
            options.add_option(Option(profile_line(p, name_w, family_w), id=str(p.path)))
        if not self.profiles:
            options.add_option(Option("no profiles/*.toml here", disabled=True))
        table.focus()
        self.action_refresh()
        self._timer = self.set_interval(REFRESH_S, self.action_refresh)

    def on_screen_suspend(self) -> None:
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()
        self.action_refresh()

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def action_refresh(self) -> None:
        """Re-read the runs (thread); a run whose files did not change keeps its cached row."""
        rows = []
        for run in list_runs(self.root):
            sig = row_signature(run)
            cached = self._row_cache.get(run.path)
            if cached is None or cached[0] != sig:
                cached = self._row_cache[run.path] = (sig, run_row(run))
            rows.append(cached[1])
        ids = {r.id for r in rows}
        queued = [e for e in queued_for(self.root) if e.run_id not in ids]
        self.post_message(RunsLoaded(rows, queued))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.rows = message.rows
        self.queued = message.queued
        self.show_rows()

    def show_rows(self) -> None:
        """Redraw the table only when what it shows changed.

        Clearing and refilling a DataTable resets its column widths until the next idle
        pass; doing it every few seconds for unchanged rows made the table flicker.
        """
        table = self.query_one("#runs", DataTable)
        live = {
            lr.model.run_id: lr
            for lr in getattr(self.app, "live_runs", {}).values()
            if lr.local  # runs trained by this process; attached ones show their stored state
        }
        shown = tuple(
            (row, live[row.id].model.state, live[row.id].model.numbers.step)
            if row.id in live and live[row.id].training
            else (row, None, None)
            for row in self.rows
        )
        self.marked = [m for m in self.marked if any(r.id == m for r in self.rows)]
        queued = tuple((e.id, e.state, e.waiting, e.run_id) for e in self.queued)
        shown = (*shown, queued, tuple(self.marked))
        if shown == self._shown:
            return
        self._shown = shown
        selected = None
        if table.row_count:
            try:
                selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:
                selected = None
        table.clear()
        for entry in reversed(self.queued):  # to come: above the newest run
            self._add_queued(table, entry)
        for row in reversed(self.rows):  # newest first
            state, step = row.state, row.step
            here = live.get(row.id)
            if here is not None and here.training:
                state, step = here.model.state, here.model.numbers.step
            label = state_text(state)
            if here is not None and here.training:
                label.append(" (here)", style="dim")
            else:
                label.append(state_detail(row.state, row.reason), style="dim")
            table.add_row(
                self._run_cell(row.id),
                row.profile,
                label,
                Text("" if step is None else str(step), justify="right"),
                Text(fmt.loss(row.best_val) if row.best_val is not None else "", justify="right"),
                row.device,
                fmt.started(row.created),
                row.host,
                key=row.id,
            )
        if selected is not None and any(r.id == selected for r in self.rows):
            table.move_cursor(row=table.get_row_index(selected))

    def _add_queued(self, table: DataTable, entry: Entry) -> None:
        label = state_text("queued")
        if entry.state == "starting":
            detail = f" starting as {entry.run_id}"
        else:
            waits = entry.waiting or "the waiter's first look"
            detail = f" for {waits if len(waits) <= 60 else waits[:59] + '…'}"
        label.append(detail, style="dim")
        table.add_row(
            Text(f"queue #{entry.id}"),
            entry.profile_name,
            label,
            Text(""),
            Text(""),
            f"--gpus {entry.label}",
            fmt.started(entry.created),
            "",
            key=f"{QUEUE_KEY}{entry.id}",
        )

    @on(DataTable.RowSelected, "#runs")
    def open_run(self, event: DataTable.RowSelected) -> None:
        run_id = event.row_key.value
        row = next((r for r in self.rows if r.id == run_id), None)
        if row is None:
            return
        self.app.open_run(RunDir(row.path))  # type: ignore[attr-defined]

    @on(OptionList.OptionSelected, "#profiles")
    def start_profile(self, event: OptionList.OptionSelected) -> None:
        entry = next((p for p in self.profiles if str(p.path) == event.option.id), None)
        if entry is None:
            return

        def answered(request) -> None:
            if request is not None:
                self.app.start_run(request)  # type: ignore[attr-defined]

        self.app.push_screen(NewRunModal(entry.path, self.root, seed=entry.seed), answered)

    def action_new_run(self) -> None:
        options = self.query_one("#profiles", OptionList)
        options.focus()
        if options.highlighted is None and options.option_count:
            options.highlighted = 0
        self.notify("choose a profile and press Enter")

    # -- marks and compare ---------------------------------------------------------------------

    def _run_cell(self, run_id: str) -> Text:
        if run_id in self.marked:
            return Text(MARK + run_id, style="bold")
        return Text(run_id)

    def _cursor_run(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None

    def action_toggle_mark(self) -> None:
        """Mark or unmark the run under the cursor, then move down (marking a few in a row)."""
        run_id = self._cursor_run()
        if run_id is not None and run_id.startswith(QUEUE_KEY):
            self.notify("a queued run has no curves yet")
            return
        if run_id is None:
            self.notify("no run to mark")
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked.append(run_id)
        table = self.query_one("#runs", DataTable)
        table.update_cell(run_id, "run", self._run_cell(run_id), update_width=True)
        self._shown = None if self._shown is None else (*self._shown[:-1], tuple(self.marked))
        table.action_cursor_down()

    def action_compare(self) -> None:
        rows = {r.id: r for r in self.rows}
        chosen = [rows[m] for m in self.marked if m in rows]
        if not chosen:
            self.notify("mark runs with m first, then c compares them", severity="warning")
            return
        self.app.push_screen(CompareScreen(chosen))


def profile_line(p: ProfileEntry, name_width: int, family_width: int) -> Group:
    """A profile's option: the name and family on one line, the description wrapped under them,
    indented. Beside a name column sized for the longest name (music-transformer-small) and a
    family column (music_transformer), a description had no room left at 80 columns; under
    its name it has the list's whole width."""
    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(width=name_width, no_wrap=True, style="bold")
    grid.add_column(width=family_width, no_wrap=True, overflow="ellipsis", style="dim")
    grid.add_row(p.name, p.family)
    if not p.description:
        return Group(grid)
    return Group(grid, Padding(Text(p.description), (0, 0, 0, 2)))


def state_detail(state: str, reason: str) -> str:
    """What the state column adds to the state: the live process, or why a run failed."""
    if state in ("live", "detached") and reason.startswith("pid "):
        return f" ({reason.split(' on ')[0]})"  # the host has its own column
    if state == "failed" and reason:
        short = reason if len(reason) <= 40 else reason[:39] + "…"
        return f": {short}"
    return ""
