"""The GPU panel: every GPU's state (RESERVED / LEASED / BUSY / FREE), gauges and processes.

NVML is read only by an ``podium.engine.gpus.nvml.GpuMonitor`` thread, never by the UI thread. One ``GpuFeed``
per app owns that monitor: the first widget that subscribes starts it, the last one to unmount
stops it (Textual unmounts every widget when the app exits, so no monitor thread outlives the
app). In the monitor's thread the feed also classifies each snapshot (``podium.engine.gpus.select``:
reservations from the GPU config, leases probed from the lease files), then posts the result to
each subscribed widget as a ``GpuUpdate`` message; widgets only format it.

Without an NVIDIA driver the panel shows the provider's one-line state ("no NVIDIA GPU: ..."), and
``PODIUM_FAKE_NVML`` selects the fake provider (tests, demos), as for ``podium gpus``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from dataclasses import dataclass

from rich.text import Text
from textual.app import App
from textual.message import Message
from textual.widget import Widget

from podium.engine.errors import PodiumError
from podium.engine.gpus.config import GpuConfig, load_gpu_config
from podium.engine.gpus.nvml import GpuInfo, GpuMonitor, GpuSnapshot, is_na
from podium.engine.gpus.select import GpuStatus, overview
from podium.tui import format as fmt

STATE_STYLES = {
    "RESERVED": "bold magenta",
    "LEASED": "bold yellow",
    "BUSY": "bold red",
    "FREE": "bold green",
}
WAITING = "reading GPUs…"


@dataclass(frozen=True)
class GpuReading:
    """One monitor snapshot with each GPU's state: what every GPU view draws from."""

    snapshot: GpuSnapshot
    statuses: tuple[GpuStatus, ...] = ()
    """One per GPU in snapshot order; empty when NVML is unusable or the config is broken."""
    problem: str = ""
    """Why the states are missing although GPUs are there (a GPU config error, a lease probe
    failure): shown instead of guessing FREE for a GPU that may be reserved."""

    def summary(self) -> str:
        """One line: the provider's state without GPUs, else how many are free."""
        snap = self.snapshot
        if not snap.available:
            return snap.state
        n = len(snap.gpus)
        if not self.statuses:
            return f"{n} GPU{'s' if n != 1 else ''} ({self.problem or 'states unknown'})"
        free = sum(1 for s in self.statuses if s.state == "FREE")
        return f"{free}/{n} GPU{'s' if n != 1 else ''} free"


@dataclass
class GpuUpdate(Message, bubble=False):
    """A new ``GpuReading``, posted from the monitor thread to each subscribed widget (only)."""

    reading: GpuReading


class GpuFeed:
    """The app's one GPU monitor, shared by every GPU view (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._widgets: list[Widget] = []
        self._monitor: GpuMonitor | None = None
        self._config: GpuConfig | None = None
        self._problem = ""
        self._failed: str | None = None
        """Why no monitor could be made (then the one reading says so, and nothing polls)."""
        self.latest: GpuReading | None = None

    @property
    def running(self) -> bool:
        return self._monitor is not None

    def subscribe(self, widget: Widget) -> None:
        """Send ``GpuUpdate``s to ``widget`` (the latest one at once); starts the monitor."""
        with self._lock:
            self._widgets.append(widget)
            start = self._monitor is None and self._failed is None
            if start:
                self._monitor = self._make_monitor()
        if self.latest is not None:
            widget.post_message(GpuUpdate(self.latest))
        if start and self._monitor is not None:
            self._monitor.start()

    def unsubscribe(self, widget: Widget) -> None:
        """Stop sending to ``widget``; the last one to leave stops the monitor thread."""
        with self._lock:
            if widget in self._widgets:
                self._widgets.remove(widget)
            monitor = self._monitor if not self._widgets else None
            if monitor is not None:
                self._monitor = None
        if monitor is not None:
            monitor.stop()

    def _make_monitor(self) -> GpuMonitor | None:
        self._problem = ""
        try:
            self._config = load_gpu_config()
        except (PodiumError, ValueError) as exc:
            # Without the config the reservations are unknown: gauges only, and say why.
            self._config = None
            self._problem = f"GPU config: {exc}"
        try:
            monitor = GpuMonitor.for_config(self._config or GpuConfig())
        except (PodiumError, ValueError) as exc:  # e.g. an unreadable PODIUM_FAKE_NVML file
            self._failed = f"no GPU readings: {exc}"
            self.latest = GpuReading(
                GpuSnapshot(taken_at=time.time(), available=False, state=self._failed, source="")
            )
            return None
        monitor.subscribe(self._on_snapshot)
        return monitor

    def _on_snapshot(self, snapshot: GpuSnapshot) -> None:
        """Monitor thread: classify (reads lease files) and hand the result to the widgets."""
        statuses: tuple[GpuStatus, ...] = ()
        problem = self._problem
        if snapshot.available and self._config is not None:
            try:
                statuses = overview(snapshot, self._config)
            except (OSError, PodiumError) as exc:
                problem = f"lease probe failed: {exc}"
        reading = GpuReading(snapshot, statuses, problem)
        self.latest = reading
        with self._lock:
            widgets = list(self._widgets)
        for widget in widgets:
            # RuntimeError: the app's loop closed under us, and there is nobody left to tell.
            with contextlib.suppress(RuntimeError):
                widget.post_message(GpuUpdate(reading))


def same_view(a: GpuReading | None, b: GpuReading | None) -> bool:
    """Whether two readings draw the same (they differ in their timestamps only)."""
    if a is None or b is None:
        return a is b
    return (
        a.snapshot._replace(taken_at=0.0, processes_at=0.0),
        a.statuses,
        a.problem,
    ) == (b.snapshot._replace(taken_at=0.0, processes_at=0.0), b.statuses, b.problem)


_FEEDS: weakref.WeakKeyDictionary[App, GpuFeed] = weakref.WeakKeyDictionary()


def gpu_feed(app: App) -> GpuFeed:
    """The ``GpuFeed`` of ``app`` (made on first use)."""
    feed = _FEEDS.get(app)
    if feed is None:
        feed = _FEEDS[app] = GpuFeed()
    return feed


# -- formatting --------------------------------------------------------------------------------


def gauges_text(gpu: GpuInfo) -> str:
    """``35%  2.0/80G  55°C  200W``: utilisation, memory used/total, temperature, power."""
    util = "N/A" if is_na(gpu.utilization) else f"{gpu.utilization}%"
    if is_na(gpu.memory_used) or is_na(gpu.memory_total):
        mem = "N/A"
    else:
        mem = fmt.size_pair(gpu.memory_used, gpu.memory_total)
    temp = "N/A" if is_na(gpu.temperature) else f"{gpu.temperature}°C"
    power = "N/A" if is_na(gpu.power_draw) else f"{gpu.power_draw / 1000:.0f}W"
    return f"{util:>4} {mem:>10} {temp:>4} {power:>4}"


def who_text(status: GpuStatus) -> str:
    """Why a GPU is not free, shortly: the reservation, the lease holders, or the busy users."""
    if status.state == "RESERVED" and status.reservation is not None:
        r = status.reservation
        return f"{'lab-wide' if r.lab_wide else 'by you'} as {r.name!r} ({r.source})"
    if status.state == "LEASED" and status.lease is not None:
        holders = [f"{h.user} (run {h.run_id})" for h in status.lease.holders]
        text = ", ".join(holders) or "a podium run"
        return text + (", shared" if status.lease.shared else "")
    if status.state == "BUSY":
        if status.users:
            return f"user{'s' if len(status.users) != 1 else ''} {', '.join(status.users)}"
        return status.detail
    return ""


def _mem(n: int | object) -> str:
    return "N/A" if is_na(n) else fmt.size(n)  # type: ignore[arg-type]


def gpu_lines(reading: GpuReading | None, *, height: int, processes: bool = True) -> list[Text]:
    """The home panel's lines, at most ``height``: a line per GPU, then who holds it, then its
    processes, dropping the processes first and the holders next when they do not fit."""
    if reading is None:
        return [Text(WAITING, style="dim")]
    snap = reading.snapshot
    if not snap.available:
        return [Text(snap.state)]
    by_index = {s.gpu.index: s for s in reading.statuses}
    heads: list[Text] = []
    whos: list[list[Text]] = []
    procs: list[list[Text]] = []
    for gpu in snap.gpus:
        status = by_index.get(gpu.index)
        t = Text(f"{gpu.index} ")
        state = status.state if status is not None else "?"
        t.append(f"{state:<8}", style=STATE_STYLES.get(state, "bold"))
        t.append(" " + gauges_text(gpu))
        heads.append(t)
        who = who_text(status) if status is not None else ""
        whos.append([Text(f"  {who}", style="dim")] if who else [])
        rows = []
        if processes and not is_na(gpu.processes):
            for p in gpu.processes:  # type: ignore[union-attr]
                command = "N/A" if is_na(p.command) else str(p.command)
                rows.append(
                    Text(f"  {p.pid} {p.user} {_mem(p.gpu_memory)} {command}", style="dim italic")
                )
        procs.append(rows)
    notes = [Text(reading.problem, style="yellow")] if reading.problem else []
    for with_who, with_procs in ((True, True), (True, False), (False, False)):
        lines = list(notes)
        for i, head in enumerate(heads):
            lines.append(head)
            if with_who:
                lines += whos[i]
            if with_procs:
                lines += procs[i]
        if len(lines) <= height:
            return lines
    if height >= 1 and len(lines) > height:
        shown = lines[: height - 1]
        shown.append(Text(f"+{len(lines) - len(shown)} more (podium gpus)", style="dim"))
        return shown
    return lines


def run_gpu_lines(
    reading: GpuReading | None, *, run_id: str, device: str, fallback: str = ""
) -> list[str]:
    """The run screen's GPU lines: the GPUs this run leases (its visible devices), with gauges.

    A run's GPUs are the ones whose lease names its id: ``claim_gpus`` leases every GPU a run
    is given, for the run's whole life, whichever process trains it.
    """
    if reading is None:
        return [fallback or WAITING]
    snap = reading.snapshot
    if device == "cpu" or (device == "" and not snap.available):
        return [f"on cpu · {reading.summary()}"]
    mine = [
        s
        for s in reading.statuses
        if s.lease is not None and any(h.run_id == run_id for h in s.lease.holders)
    ]
    if not mine:
        if device:
            return [f"holds no GPU now · {reading.summary()}"]
        return [reading.summary()]
    return [f"GPU {s.gpu.index}: {gauges_text(s.gpu).strip()}" for s in mine]


class GpuPanel(Widget):
    """The home screen's GPU panel: a ``gpu_lines`` view of the app's ``GpuFeed``."""

    DEFAULT_CSS = """
    GpuPanel { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.reading: GpuReading | None = None

    def on_mount(self) -> None:
        gpu_feed(self.app).subscribe(self)

    def on_unmount(self) -> None:
        gpu_feed(self.app).unsubscribe(self)

    def on_gpu_update(self, message: GpuUpdate) -> None:
        if same_view(message.reading, self.reading):
            return  # idle GPUs: no repaint every poll
        self.reading = message.reading
        summary = message.reading.summary() if message.reading.statuses else ""
        self.border_title = f"GPUs ({summary})" if summary else "GPUs"
        self.refresh()

    def lines(self, height: int | None = None) -> list[Text]:
        return gpu_lines(
            self.reading, height=self.content_size.height if height is None else height
        )

    def text(self) -> str:
        """The panel as plain text (tests)."""
        return "\n".join(t.plain for t in self.lines())

    def render(self) -> Text:
        return Text("\n").join(self.lines())
