"""Text panels of the run screen: the header line, training numbers, and resources.

Each is a ``Static`` redrawn from the ``RunModel`` with ``layout=False`` (fixed heights), so a
redraw repaints a few lines and never relayouts the screen.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static

from podium.engine.cpu_share import current_plan
from podium.tui import format as fmt
from podium.tui.families import group_label
from podium.tui.model import RunModel
from podium.tui.proc import CpuMeter, cuda_memory, rss_bytes, total_ram_bytes
from podium.tui.widgets.gpu_panel import GpuReading, GpuUpdate, gpu_feed, run_gpu_lines

STATE_STYLES = {
    "starting": "bold yellow",
    "running": "bold green",
    "paused": "bold yellow",
    "stopping": "bold yellow",
    "finished": "bold cyan",
    "stopped": "bold cyan",
    "failed": "bold red",
    "live": "bold green",
    "interrupted": "bold magenta",
    "new": "dim",
    "queued": "bold blue",
}


def state_text(state: str) -> Text:
    return Text(f"● {state}", style=STATE_STYLES.get(state, "bold"))


class RunHeader(Static):
    """Run id, profile, device, state, step of steps; a second line when the run failed."""

    DEFAULT_CSS = """
    RunHeader { height: auto; padding: 0 1; }
    """

    def show(self, model: RunModel, *, note: str = "", hint: str = "") -> None:
        t = Text()
        t.append_text(state_text(model.state))
        t.append(f"  {model.run_id or '(new run)'}", style="bold")
        profile = f"{model.profile} ({model.family})" if model.family else model.profile
        if profile:
            t.append(f"  {profile}")
        if model.device:
            t.append(f"  {model.device}", style="dim")
        end = model.end_step
        t.append(f"  step {model.numbers.step}" + (f"/{end}" if end else ""))
        if note:
            t.append(f"  {note}", style="italic")
        routine = model.state == "paused" and model.reason in ("paused by user", "")
        if (
            model.reason
            and not routine
            and model.state in ("failed", "paused", "stopped", "finished")
        ):
            style = "bold red" if model.state == "failed" else "dim"
            t.append("\n" + model.reason, style=style)
            if hint:
                t.append(f"\nhint: {hint}", style="yellow")
        self._text = t
        self._fit()

    def on_resize(self) -> None:
        if getattr(self, "_text", None) is not None:
            self._fit()

    def _fit(self) -> None:
        """Relayout only when the number of lines, as wrapped at this width, changed: a line
        that wraps (a long run id, an attached run's note at 80 columns) must not be cut."""
        t = self._text
        width = self.content_size.width or self.app.size.width - 2
        lines = len(t.wrap(self.app.console, max(width, 1)))
        changed = lines != getattr(self, "_lines", 0)
        self._lines = lines
        self.update(t, layout=changed)


def reading(value: float) -> str:
    """A metric's or hook's value: a percent when it is a fraction, else a number."""
    if value == value and 0.0 <= value <= 1.0:
        return f"{value * 100:.0f}%"
    return fmt.num(value, 3)


def reading_rows(model: RunModel) -> list[tuple[str, str]]:
    """(label, text) rows of the latest validation metrics (one row) and of each epoch hook
    group (a row each), for whatever the family measures."""
    rows: list[tuple[str, str]] = []
    metrics = model.numbers.metrics()
    if metrics:
        rows.append(("metrics", " · ".join(f"{k} {reading(v)}" for k, v in metrics.items())))
    for group, values in model.numbers.hook_groups().items():
        text = " · ".join(
            f"{name.removeprefix(group + '/')} {reading(v)}" for name, v in values.items()
        )
        rows.append((group_label(model.family, group), text))
    return rows


class StatsPanel(Widget):
    """Learning rate, gradient norm, throughput and MFU (where the run reports one), progress
    bars, ETA and early stopping, then the latest validation metrics and epoch-hook values when
    the family measures any.

    Drawn at render time, so the bars always fit the panel's current width.
    """

    DEFAULT_CSS = """
    StatsPanel { height: 8; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """
    BASE_ROWS = 7
    """The rows every run has (lr to early stopping); the border takes one more."""

    model: RunModel | None = None
    _extra = 0

    def show(self, model: RunModel) -> None:
        self.model = model
        extra = len(reading_rows(model))
        if extra != self._extra:  # a metric or hook group appeared: one more line each
            self._extra = extra
            self.styles.height = 1 + self.BASE_ROWS + extra
        self.refresh()

    def render(self) -> Text:
        model = self.model
        if model is None:
            return Text()
        n = model.numbers
        width = max(self.content_size.width, 20)
        rows = Text()

        def row(label: str, value: str | Text) -> None:
            if rows:
                rows.append("\n")
            rows.append(f"{label:<11}", style="dim")
            rows.append(value)

        row("lr", fmt.lr(n.lr))
        row("grad norm", fmt.num(n.grad_norm))
        row("tokens/s", f"{fmt.num(n.tokens_per_s)} · MFU {fmt.mfu(n.mfu)}")
        row("samples/s", fmt.num(n.samples_per_s))
        spe = model.steps_per_epoch
        bar_w = max(width - 11 - 16, 4)
        if spe:
            done = n.step / spe
            epochs = (model.total_steps or 0) // spe
            in_epoch = done - math.floor(done) if n.step % spe else (1.0 if n.step else 0.0)
            label = f" {in_epoch * 100:3.0f}% ep {math.ceil(done) if n.step else 1}/{epochs}"
            row("epoch", fmt.bar(in_epoch, bar_w) + label)
        else:
            row("epoch", f"{n.epoch:.2f}")
        end = model.end_step
        eta = fmt.duration(n.eta_s) if model.state == "running" else fmt.DASH
        if end:
            row("run", fmt.bar(n.step / end, bar_w) + f" {n.step / end * 100:3.0f}% ETA {eta}")
        else:
            row("run", f"ETA {eta}")
        if n.patience_left is not None:
            row("patience", f"{n.patience_left} left · best val {fmt.loss(n.best_val)}")
        else:
            row("best val", fmt.loss(n.best_val))
        for label, text in reading_rows(model):
            row(label[:10], text)
        return rows


LABEL = 11
"""Width of the label column of the stats and resources panels."""


def hanging(rows: list[tuple[str, list[Text]]], width: int, console) -> Text:
    """``label  value`` rows, each value's pieces joined by `` · `` and wrapped at ``width``
    between pieces (a piece longer than a line wraps at its spaces), each line under the value
    (not under the label): a long line ("no NVIDIA GPU: NVML library not found") is read whole
    in the narrow side panel instead of ending in an ellipsis."""
    out = Text()
    room = max(width - LABEL, 8)
    sep = " · "
    for label, pieces in rows:
        lines: list[Text] = []
        line = Text()
        for piece in pieces:
            if line and line.cell_len + len(sep) + piece.cell_len > room:
                lines.append(line)
                line = Text()
            if line:
                line.append(sep)
            line.append_text(piece)
        lines.append(line)
        for i, text in enumerate(x for ln in lines for x in ln.wrap(console, room)):
            if out:
                out.append("\n")
            out.append(f"{label if i == 0 else '':<{LABEL}}", style="dim")
            out.append_text(text)
    return out


class ResourcesPanel(Static):
    """This process's RAM and CPU, this run's CUDA memory, and the run's GPUs.

    The GPU lines come from the app's ``GpuFeed`` (``podium.tui.widgets.gpu_panel``): the gauges of the
    GPUs this run leases, or "run on cpu" with the machine's one-line GPU state. The run comes
    from the screen's ``model`` (run id and device), read when a reading arrives. Rows too long
    for the panel wrap under their value; the panel grows a line for each.
    """

    DEFAULT_CSS = """
    ResourcesPanel { height: 4; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def on_mount(self) -> None:
        self._cpu = CpuMeter()
        self._total = total_ram_bytes()
        self._top: list[tuple[str, list[Text]]] = []
        self._gpu_line = ""
        self._reading: GpuReading | None = None
        self._height = 0
        self._shown: Text | None = None
        self._sampled = 0
        self._shown_key: tuple = ()
        gpu_feed(self.app).subscribe(self)

    def on_unmount(self) -> None:
        gpu_feed(self.app).unsubscribe(self)

    def on_resize(self) -> None:
        self._show()

    def sample(self, gpu_line: str = "") -> None:
        """Re-read this process's RAM and CPU and the CUDA memory (every few seconds).

        ``gpu_line`` is shown until the first GPU reading arrives.
        """
        # A run trained by another process (attached): that process's numbers, not ours.
        live = getattr(self.screen, "live", None)
        pid = getattr(live, "pid", None) if not getattr(live, "local", True) else None
        if pid != self._cpu.pid:
            self._cpu = CpuMeter(pid)
        rss = rss_bytes() if pid is None else rss_bytes(pid)
        cpu = self._cpu.percent()
        # "RAM 462M of 23.5G": the host's RAM beside this process's, not after its CPU share.
        ram = Text(f"RAM {fmt.size(rss)}")
        if pid is None and self._total:
            ram.append(Text(f" of {fmt.size(self._total)}", style="dim"))
        process = [ram, Text(f"CPU {fmt.percent(cpu)}")]
        if pid is not None:
            process.append(Text(f"pid {pid}", style="dim"))
        mem = cuda_memory() if pid is None else getattr(live, "cuda_memory", None)
        if mem is None:
            described = ""
            if live is not None and getattr(live, "local", True):  # trained by this process
                plan = current_plan()
                described = plan.describe() if plan is not None else ""
            elif live is not None:
                described = getattr(live, "cpu_plan", "")
            # "CPU run · 2 threads of 2 CPUs (1 other run) · passive wait": the share it took.
            cuda = [Text("CPU run"), *(Text(part) for part in described.split(" · ") if part)]
        else:
            cuda = [
                Text(f"alloc {fmt.size(mem.allocated)}"),
                Text(f"reserved {fmt.size(mem.reserved)}"),
                Text(f"peak {fmt.size(mem.peak)}"),
            ]
        self._top = [("process" if pid is None else "trainer", process), ("CUDA", cuda)]
        self._ram_alone = Text(f"RAM {fmt.size(rss)}")
        self._gpu_line = gpu_line
        self._sampled += 1
        self._show()

    def on_gpu_update(self, message: GpuUpdate) -> None:
        self._reading = message.reading
        self._show()

    def gpu_lines(self) -> list[str]:
        model = getattr(self.screen, "model", None)
        return run_gpu_lines(
            self._reading,
            run_id=getattr(model, "run_id", "") or "",
            device=getattr(model, "device", "") or "",
            fallback=self._gpu_line,
        )

    def _show(self) -> None:
        if not getattr(self, "_top", None):  # a resize before mount or the first sample
            return
        rows = list(self._top)
        width = self.content_size.width or 40
        lines = self.gpu_lines()
        key = (self._sampled, tuple(lines), width)
        if key == self._shown_key:
            # The GPU feed posts a reading every second, most of them the same lines ("run on
            # cpu", an idle GPU): not even wrapped again (~1 ms of the UI thread each).
            return
        self._shown_key = key
        label, process = rows[0]
        if sum(p.cell_len + 3 for p in process) - 3 > width - LABEL:
            # Narrow: the host's RAM goes before the line wraps (a line the event log needs).
            rows[0] = (label, [self._ram_alone, *process[1:]])
        for i, line in enumerate(lines):
            rows.append(("GPU" if i == 0 else "", [Text(p) for p in line.split(" · ")]))
        t = hanging(rows, width, self.app.console)
        if t == self._shown:
            # A sample that reads as the last did (the RAM and CPU as rounded): repainting an
            # unchanged panel cost the UI thread more than any other panel while a run trained
            # in this process (bench/bench_dashboard.py).
            return
        self._shown = t
        height = 1 + len(t.plain.split("\n"))  # the border line, then the rows
        relayout = height != self._height
        if relayout:
            self._height = height
            self.styles.height = height
        self.update(t, layout=relayout)
