"""Where ``podium prepare`` finds pieces: the ``emopia`` layout and any ``midi-folder`` tree.

A source yields ``Item``s (a file and its labels) and lists files it refuses outright (an EMOPIA
clip without its quadrant in the name). Walking is lazy and sorted, so a 176k-file Lakh tree is
never one list of parsed objects, and the report's order does not depend on the file system.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from podium.engine.data.prepare.labels import Labels, find_labels, read_labels
from podium.engine.errors import DataError

SOURCES = ("emopia", "midi-folder")
MIDI_SUFFIXES = (".mid", ".midi")
_QUADRANT = re.compile(r"^(Q[1-4])(?:[_\-. ]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Item:
    """One MIDI file to prepare."""

    file: str
    """Path relative to the source directory (posix), as the report names it."""
    path: Path
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    """A file the source itself rejects, before any parsing."""

    file: str
    reason: str


def midi_files(root: Path) -> Iterator[Path]:
    """MIDI files under ``root``, recursively, sorted per directory; hidden entries skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(MIDI_SUFFIXES):
                yield Path(dirpath) / name


def quadrant_of(name: str) -> str | None:
    """``Q1`` .. ``Q4`` from a file name starting with it (EMOPIA's ``Q3_xyz_0.mid``)."""
    m = _QUADRANT.match(name)
    return m.group(1).upper() if m else None


def iter_source(
    source: str, root: Path, labels_file: Path | None = None
) -> Iterator[Item | Refused]:
    """The items (and refusals) of ``source`` at ``root``.

    Raises:
        DataError: unknown source, missing directory, unreadable labels file.
    """
    if source not in SOURCES:
        raise DataError(f"source {source!r}: must be one of {', '.join(SOURCES)}")
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset directory")
    if source == "emopia":
        return _emopia(root, labels_file)
    return _midi_folder(root, labels_file)


def _labels_for(root: Path, labels_file: Path | None) -> Labels:
    if labels_file is not None:
        return read_labels(labels_file)
    for name in ("labels.jsonl", "labels.csv"):
        if (root / name).is_file():
            return read_labels(root / name)
    return {}


def _midi_folder(root: Path, labels_file: Path | None) -> Iterator[Item | Refused]:
    labels = _labels_for(root, labels_file)
    for path in midi_files(root):
        rel = path.relative_to(root).as_posix()
        label = find_labels(labels, rel)
        if "emotion" not in label and (q := quadrant_of(path.name)):
            label["emotion"] = q
        yield Item(rel, path, label)


def _emopia(root: Path, labels_file: Path | None) -> Iterator[Item | Refused]:
    midi_root = root / "midis" if (root / "midis").is_dir() else root
    keys = emopia_keys(root)
    labels = read_labels(labels_file) if labels_file is not None else {}
    for path in midi_files(midi_root):
        rel = path.relative_to(midi_root).as_posix()
        q = quadrant_of(path.name)
        if q is None:
            yield Refused(rel, "unsupported: no Q1_ .. Q4_ prefix in the file name")
            continue
        label = {"emotion": q, **find_labels(labels, rel)}
        if path.stem in keys and "key" not in label:
            label["key"], mode = keys[path.stem]
            if mode:
                label["key_mode"] = mode
        yield Item(rel, path, label)


def emopia_keys(root: Path) -> dict[str, tuple[str, str]]:
    """Clip stem -> (keyname, keymode) as EMOPIA's ``key_mode_tempo.csv`` writes them (``C``
    and ``1``: C major); {} when absent. The family's tokeniser parses them."""
    found = sorted(root.rglob("key_mode_tempo.csv"))
    if not found:
        return {}
    out: dict[str, tuple[str, str]] = {}
    try:
        with found[0].open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
            name_col = next(
                (cols[c] for c in ("name", "clip", "clip_name", "file") if c in cols), None
            )
            key_col = next((cols[c] for c in ("keyname", "key", "key_name") if c in cols), None)
            mode_col = next((cols[c] for c in ("keymode", "mode", "key_mode") if c in cols), None)
            if name_col is None or key_col is None:
                return {}
            for row in reader:
                stem = Path((row.get(name_col) or "").strip()).stem
                key = (row.get(key_col) or "").strip()
                mode = (row.get(mode_col) or "").strip() if mode_col else ""
                if stem and key:
                    out[stem] = (key, mode)
    except (OSError, csv.Error) as exc:
        raise DataError(f"{found[0]}: cannot read it ({exc})") from None
    return out
