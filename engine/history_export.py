"""A finished (or running) run's stored history written out for the tools a lab already reads.

    podium export RUN --tensorboard DIR     event files under DIR/<run id>/
    podium export RUN --csv FILE|DIR|-      one tidy long CSV: run,series,step,epoch,wall,value

Both read every point of every scalar series from the run's store (``RunReader.rows``: one
snapshot, streamed), so runs trained before ``[log] tensorboard`` existed, or without it, can join
the others. The TensorBoard files are written by the live mirror's own writer and tag naming
(``log_sinks.tensorboard_writer``), so an exported run and a mirrored one look the same. Unlike
the live mirror, an export holds each step once even after a resume replayed some steps (the
store keeps the last value of a step).

Nothing a user had is lost: an existing output is refused unless ``--force``, and even then only
a CSV file or a folder holding nothing but TensorBoard event files is replaced; outputs are
written under a temporary name and renamed into place, so a failed export leaves the old one (or
nothing) behind, never a half-written file under the final name.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from podium.engine.errors import RunError
from podium.engine.log_sinks import add_tensorboard_scalars, importable, tensorboard_writer
from podium.engine.runs import RunDir
from podium.engine.store import RunReader

CSV_COLUMNS = ("run", "series", "step", "epoch", "wall", "value")
"""The export's header. epoch and wall are empty where the store has none; value ``nan`` is a
logged NaN. Floats are written in Python's shortest round-trip form, so they read back exact."""

_EVENT_FILE = "events.out.tfevents."
"""How TensorBoard event files are named: the only files ``--force`` replaces in DIR/<run>."""


class ExportError(RunError):
    """An export target or a run's history does not allow the export (exit 2)."""


@dataclass(frozen=True)
class Written:
    """What one export wrote: ``path`` None is stdout."""

    path: Path | None
    series: int
    points: int


def open_history(run: RunDir) -> RunReader:
    """The run's store, read-only, refusing one with nothing to export.

    Raises:
        ExportError: no store, or a store without a single series.
        StoreDamaged: the store is not a readable database.
    """
    if not run.db_path.exists():
        raise ExportError(f"run {run.id}: no metrics store ({run.db_path}): nothing to export")
    reader = RunReader.open(run.db_path)
    try:
        if not reader.series_names():
            raise ExportError(f"run {run.id}: its store holds no series yet: nothing to export")
    except BaseException:
        reader.close()
        raise
    return reader


def _refuse_inside_run(run: RunDir, target: Path, flag: str) -> None:
    try:
        inside = target.resolve().is_relative_to(run.path.resolve())
    except OSError:
        inside = False
    if inside:
        raise ExportError(f"{flag}: {target} is inside run {run.id}'s directory; write elsewhere")


def tensorboard_target(run: RunDir, directory: Path, *, force: bool) -> Path:
    """DIR/<run id>, checked before anything is written.

    Raises:
        ExportError: tensorboard is not installed; the folder exists (without ``force``) or
            holds anything but event files; DIR is a file.
    """
    if not importable("tensorboard"):
        raise ExportError(
            "--tensorboard: the tensorboard package is not installed "
            "(pip install 'podium[tensorboard]')"
        )
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"--tensorboard {directory}: is a file, not a folder")
    final = directory / run.id
    _refuse_inside_run(run, final, f"--tensorboard {directory}")
    if final.exists() or final.is_symlink():
        if not force:
            raise ExportError(
                f"--tensorboard {directory}: {final} exists (--force replaces its event files)"
            )
        if final.is_symlink() or not final.is_dir():
            raise ExportError(f"--tensorboard {directory}: {final} is not a folder; not replaced")
        others = sorted(p.name for p in final.iterdir() if not p.name.startswith(_EVENT_FILE))
        if others:
            raise ExportError(
                f"--tensorboard {directory}: {final} holds more than TensorBoard event files "
                f"({', '.join(others[:3])}); not replaced, choose another DIR"
            )
    return final


def csv_target(run: RunDir, target: str, *, force: bool) -> Path | None:
    """The CSV file to write: None for ``-`` (stdout), DIR/<run id>.csv for an existing folder,
    else the file named, checked before anything is written.

    Raises:
        ExportError: the file exists (without ``force``) or is not a regular file; its folder
            does not exist.
    """
    if target == "-":
        return None
    path = Path(target)
    if path.is_dir():
        path = path / f"{run.id}.csv"
    _refuse_inside_run(run, path, f"--csv {target}")
    if not path.parent.is_dir():
        raise ExportError(f"--csv {target}: no folder {path.parent}")
    if path.exists() or path.is_symlink():
        if not force:
            raise ExportError(f"--csv {target}: {path} exists (--force replaces it)")
        if path.is_symlink() or not path.is_file():
            raise ExportError(f"--csv {target}: {path} is not a regular file; not replaced")
    return path


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.export-{os.getpid()}")


def write_tensorboard(reader: RunReader, final: Path) -> Written:
    """Every point of every series into event files under ``final`` (see ``tensorboard_target``),
    written in a temporary folder beside it and renamed into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(final)
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this pid's crashed export
    tmp.mkdir()
    series: set[str] = set()
    points = 0
    try:
        writer = tensorboard_writer(tmp)
        try:
            for row in reader.rows():
                add_tensorboard_scalars(writer, row.step, row.wall, {row.series: row.value})
                series.add(row.series)
                points += 1
        finally:
            writer.close()
        if not final.exists():
            tmp.rename(final)
        else:  # --force, checked by tensorboard_target: the old files go once the new are in
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            try:
                tmp.rename(final)
            except BaseException:
                old.rename(final)
                raise
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Written(final, len(series), points)


def _write_rows(reader: RunReader, run_id: str, out: TextIO) -> tuple[int, int]:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    series: set[str] = set()
    points = 0
    for row in reader.rows():
        writer.writerow((run_id, row.series, row.step, row.epoch, row.wall, row.value))
        series.add(row.series)
        points += 1
    return len(series), points


def write_csv(reader: RunReader, run_id: str, path: Path | None) -> Written:
    """Every point of every series as one long CSV (``CSV_COLUMNS``) at ``path`` (written under a
    temporary name and renamed into place), or to stdout when ``path`` is None."""
    if path is None:
        n_series, points = _write_rows(reader, run_id, sys.stdout)
        sys.stdout.flush()
        return Written(None, n_series, points)
    tmp = _temporary(path)
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            n_series, points = _write_rows(reader, run_id, out)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return Written(path, n_series, points)
