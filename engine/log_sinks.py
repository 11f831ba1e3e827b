"""Mirrors of a run's series into the tools a lab already reads: TensorBoard and W&B.

The profile's ``[log]`` table turns them on. Each mirror is one more subscriber of the run's
event bus behind its own bounded queue (``QueuedSubscriber``), like the store: a slow or broken
mirror drops its own events and says so once, and never stalls or stops training. Both packages
are optional extras; a profile that asks for a missing one is refused before the run starts.
W&B runs offline by default (shared servers often have no internet; ``wandb sync`` later).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from podium.engine.errors import ProfileError
from podium.engine.events import EvalMetrics, Event, Scalars, StepMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WandbConfig:
    """``[log.wandb]``: mirror the run to Weights & Biases (off while ``project`` is empty)."""

    project: str = ""
    mode: Literal["offline", "online"] = "offline"
    """offline: files under the run directory only (``wandb sync DIR`` uploads them later)."""
    entity: str = ""
    """The W&B team or user (blank: the account's default)."""


@dataclass(frozen=True)
class LogConfig:
    """The profile's ``[log]`` table: where else a run's series go besides its own store."""

    tensorboard: bool = False
    """Write TensorBoard event files under ``<run>/tensorboard`` (every scalar series)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)


EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}
"""The package each mirror needs, as pip names it (``pip install tensorboard``)."""


def importable(name: str) -> bool:
    """Can ``import name`` work (without importing it: torch's tensorboard import is slow)?"""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def check_log_config(cfg: LogConfig, source: str = "") -> None:
    """Refuse, before a run starts, a mirror whose package is not installed.

    Raises:
        ProfileError: naming the table and the package to install.
    """
    where = f"{source}: " if source else ""
    if cfg.tensorboard and not importable("tensorboard"):
        raise ProfileError(
            f"{where}log.tensorboard: the tensorboard package is not installed "
            "(pip install tensorboard), or set log.tensorboard = false"
        )
    if cfg.wandb.project and not importable("wandb"):
        raise ProfileError(
            f"{where}log.wandb: the wandb package is not installed (pip install wandb), "
            'or leave log.wandb.project = ""'
        )


def event_values(event: Event) -> tuple[int, float, dict[str, float]] | None:
    """(step, wall time, series -> value) of an event that carries scalar series."""
    from podium.engine.sinks import eval_series, step_series

    if isinstance(event, StepMetrics):
        return event.step, event.wall, step_series(event)
    if isinstance(event, EvalMetrics):
        return event.step, event.wall, eval_series(event)
    if isinstance(event, Scalars):
        return event.step, event.wall, dict(event.values)
    return None


def tensorboard_writer(directory: Path) -> Any:
    """The event-file writer of the live mirror and of ``podium export --tensorboard`` alike
    (torch's ``SummaryWriter``), so that a run's files look the same whichever wrote them."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(directory), flush_secs=10)


def add_tensorboard_scalars(
    writer: Any, step: int, wall: float | None, values: Mapping[str, float]
) -> None:
    """Each series as the TensorBoard scalar of the same name (the tag is the store's series
    name), at its step and wall time (None: now)."""
    for name, value in values.items():
        writer.add_scalar(name, value, global_step=step, walltime=wall)


class _Mirror:
    """Opens its backend on its own thread (on the first event), and stops trying after the
    first failure with one warning: a mirror is never worth a run."""

    name = "mirror"

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._opened = False
        self._broken = False

    def __call__(self, event: Event) -> None:
        if self._broken:
            return
        got = event_values(event)
        if got is None:
            return
        try:
            if not self._opened:
                self._open()
                self._opened = True
            self._write(*got)
        except Exception as exc:
            self._broken = True
            self._warn(f"{self.name} mirror stopped: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._opened and not self._broken:
            try:
                self._close()
            except Exception as exc:
                self._warn(f"{self.name} mirror did not close cleanly: {exc}")

    def _open(self) -> None:
        raise NotImplementedError

    def _write(self, step: int, wall: float, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


class TensorBoardSink(_Mirror):
    """Every scalar series as a TensorBoard scalar of the same name, at its step."""

    name = "TensorBoard"

    def __init__(self, directory: Path, warn: Callable[[str], None]) -> None:
        super().__init__(warn)
        self.directory = directory
        self._writer: Any = None

    def _open(self) -> None:
        self._writer = tensorboard_writer(self.directory)

    def _write(self, step: int, wall: float, values: Mapping[str, float]) -> None:
        add_tensorboard_scalars(self._writer, step, wall, values)

    def _close(self) -> None:
        self._writer.close()


class WandbSink(_Mirror):
    """Every scalar series logged to a W&B run named after the podium run (one W&B run per
    podium run: a resume continues it)."""

    name = "W&B"

    def __init__(
        self,
        cfg: WandbConfig,
        run_dir: Path,
        run_id: str,
        config: Mapping[str, Any],
        warn: Callable[[str], None],
    ) -> None:
        super().__init__(warn)
        self.cfg = cfg
        self.run_dir = run_dir
        self.run_id = run_id
        self.config = dict(config)
        self._run: Any = None
        self._last_step = -1

    def _open(self) -> None:
        import wandb

        self._run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity or None,
            mode=self.cfg.mode,
            dir=str(self.run_dir),
            name=self.run_id,
            id=wandb_id(self.run_id),
            resume="allow",
            config=self.config,
            settings=wandb.Settings(console="off", silent=True),
        )

    def _write(self, step: int, wall: float, values: Mapping[str, float]) -> None:
        # W&B refuses steps below its last: after a resume from an earlier checkpoint the
        # replayed steps are already in it.
        if step < self._last_step:
            return
        self._last_step = step
        self._run.log(dict(values), step=step)

    def _close(self) -> None:
        self._run.finish()


def wandb_id(run_id: str) -> str:
    """A W&B run id for a podium run id (W&B allows letters, digits, '-' and '_')."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in run_id)[:64]


def build_mirrors(
    cfg: LogConfig,
    *,
    run_dir: Path,
    run_id: str,
    profile: Mapping[str, Any],
    warn: Callable[[str], None] | None = None,
) -> list[_Mirror]:
    """The mirrors the ``[log]`` table asks for (subscribe each behind a QueuedSubscriber)."""
    say = warn or (lambda line: print(f"podium: warning: {line}", file=sys.stderr))
    mirrors: list[_Mirror] = []
    if cfg.tensorboard:
        mirrors.append(TensorBoardSink(run_dir / "tensorboard", say))
    if cfg.wandb.project:
        mirrors.append(WandbSink(cfg.wandb, run_dir, run_id, profile, say))
    return mirrors
