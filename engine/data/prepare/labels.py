"""Reading a labels file for ``podium prepare``: CSV or JSONL, file name -> labels.

A lab's labels come as a CSV (``file,emotion,genre,...``) or JSON lines (``{"file": ..., ...}``)
with any subset of ``LABEL_FIELDS``; other columns are carried along untouched. Rows are matched
to MIDI files by relative path, relative path without suffix, file name, or stem, in that order,
so ``a.mid``, ``sub/a`` and ``a`` all work. A bad row is a ``DataError`` naming file and line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from podium.engine.errors import DataError

LABEL_FIELDS = ("emotion", "sentiment", "genre", "description", "key")
"""The labels podium knows; a family's tokeniser reads the ones it needs."""
ALIASES = {"quadrant": "emotion", "style": "genre", "file_name": "file", "filename": "file"}
"""Other spellings seen in the wild (podium's demo corpus writes ``style``-free JSONL)."""

Labels = dict[str, dict[str, str]]


def read_labels(path: Path) -> Labels:
    """``{name: {field: value}}`` from a ``.csv`` or ``.jsonl``/``.json`` file; each row is
    stored under its ``file`` and ``id`` (when given).

    Raises:
        DataError: unreadable file, a row without ``file``/``id``, bad JSON, unknown suffix.
    """
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the labels file ({exc})") from None
    rows: list[tuple[str, dict[str, object]]] = []
    if suffix in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            rows.append((f"{path}:{n}", obj))
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        for n, row in enumerate(reader, start=2):
            rows.append((f"{path}:{n}", {k: v for k, v in row.items() if k is not None}))
    else:
        raise DataError(f"{path}: labels must be a .csv or .jsonl file")
    out: Labels = {}
    for where, raw in rows:
        label: dict[str, str] = {}
        for k, v in raw.items():
            name = ALIASES.get(k.strip().lower(), k.strip().lower())
            if v is None or (isinstance(v, str) and not v.strip()):
                continue
            label.setdefault(name, str(v).strip())
        names = [label.get("file"), label.get("id")]
        if not any(names):
            raise DataError(f"{where}: each row needs a 'file' (or 'id') naming the MIDI file")
        fields = {k: v for k, v in label.items() if k not in ("file", "id")}
        for name in names:
            if name:
                out[name] = fields
    return out


def find_labels(labels: Labels, rel: str) -> dict[str, str]:
    """The labels of the MIDI file at relative posix path ``rel`` ({} when none match)."""
    stem_path = rel.rsplit(".", 1)[0]
    name = rel.rsplit("/", 1)[-1]
    for candidate in (rel, stem_path, name, name.rsplit(".", 1)[0]):
        if candidate in labels:
            return dict(labels[candidate])
    return {}
