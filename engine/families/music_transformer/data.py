"""Datasets for the Music Transformer family: labelled MIDI -> event tokens -> training crops.

Two sources (``DataConfig.source``):

* ``demo``: podium's generated corpus; sentiment is the valence of its quadrant (positive for
  Q1/Q4, negative for Q2/Q3), genre its accompaniment style (both in its ``labels.jsonl``).
* ``midi_dir``: a folder of ``.mid``/``.midi`` files, with an optional labels file
  (``data.labels``, else ``labels.jsonl`` / ``labels.csv`` in the folder) giving each file a
  ``sentiment`` and a ``genre``, as names or as the lab's integers.

A ``data.path`` that is a ``podium prepare`` output directory (made with this family's
``prepare.MTTokenizer``) is read instead, whatever the source: its tokens as they are, its
train/val split as prepare drew it, each piece's labels mapped through ``[data.conditioning]``
as for a MIDI folder (a piece whose label is not in a table is left out with a warning).

Preparation tokenises every piece once (``tokens.encode_midi``) and stores ``tokens.npz`` and
``meta.json`` (with each piece's raw labels) in ``<cache>/prepared/mt-<source>-<hash>/``, built
in a staging directory and renamed into place; it is redone when the files (paths, sizes,
mtimes) or the tokeniser change. Mapping labels to conditioning tokens, the split and the crops
are redone on every build, so the profile's ``[data.conditioning]`` tables and ``seq_len`` can
change freely.

    bundle = build_datasets(DataConfig(source="demo", n_pieces=400, seq_len=512))
    bundle.train[0]   # {"x": (512,) int64, "y": (512,) int64, "mask": (512,) float32}
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from podium.engine.data.cache import cache_dir_for, publish_dir, staging_dir, sweep_stale
from podium.engine.data.demo_corpus import generate_demo_corpus
from podium.engine.data.midi_io import drums_as_notes, load_midi
from podium.engine.data.prepared import PreparedData, is_prepared
from podium.engine.data.splits import split_val_ids
from podium.engine.data.token_pack import load_token_pack, save_token_pack
from podium.engine.errors import DataError
from podium.engine.families.music_transformer import tokens as T
from podium.engine.families.music_transformer.config import (
    CONDITIONS,
    ConditioningConfig,
    DataConfig,
)

PREPARED_FORMAT = 1
"""Bumped when the prepared files or the tokeniser change, so old caches are redone."""
DEMO_CORPUS_VERSION = 1
"""The demo corpus's directory name, as the CP family names it (the two share one corpus)."""
MIDI_SUFFIXES = (".mid", ".midi")


# -- conditioning tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionTokens:
    """Where each conditioning value's token sits: after the 390 event ids, the active
    dimensions' tables one after the other, each in index order."""

    tables: Mapping[str, Mapping[str, int]]
    """Active dimension -> {name: index}, in token order."""

    @classmethod
    def of(cls, cfg: ConditioningConfig) -> ConditionTokens:
        return cls({d: dict(getattr(cfg, d)) for d in cfg.active})

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ConditionTokens:
        return cls({d: dict(t) for d, t in (info.get("conditioning") or {}).items()})

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(self.tables)

    @property
    def vocab_size(self) -> int:
        return T.N_EVENTS + sum(len(t) for t in self.tables.values())

    def token(self, dim: str, name: str) -> int:
        offset = T.N_EVENTS
        for d, table in self.tables.items():
            if d == dim:
                return offset + table[name]
            offset += len(table)
        raise KeyError(dim)

    def names(self, dim: str) -> tuple[str, ...]:
        table = self.tables[dim]
        return tuple(sorted(table, key=table.__getitem__))

    def resolve(self, dim: str, value: object) -> str | None:
        """A label (a name, or an index as int or digits) -> its name; None if not in the
        table."""
        table = self.tables[dim]
        text = str(value).strip().lower()
        if text.lstrip("-").isdigit():
            names = self.names(dim)
            i = int(text)
            return names[i] if 0 <= i < len(names) else None
        return text if text in table else None

    def prefix(self, labels: Mapping[str, str]) -> list[int]:
        """The tokens that open a sequence with these (resolved) names; END alone for a model
        without conditioning (a start marker, so the first event is predicted too)."""
        return [self.token(d, labels[d]) for d in self.dims] or [T.END]

    @property
    def n_prefix(self) -> int:
        return max(len(self.dims), 1)


# -- the dataset -------------------------------------------------------------------------------


class EventCropDataset(Dataset):
    """One example per piece: its conditioning tokens, then a crop of its events (END last).

    A piece that fits in ``seq_len + 1`` tokens is taken whole (padded with PAD, mask 0).
    Longer pieces are cropped: in training at a start drawn from (seed, epoch, example) every
    epoch (``set_epoch``), so a resumed run sees the same crops; in validation at the start.
    Targets that are conditioning tokens are masked: they are given, not predicted.
    """

    def __init__(
        self,
        pieces: Sequence[np.ndarray],
        prefixes: Sequence[Sequence[int]],
        seq_len: int,
        *,
        random_crops: bool,
        files: Sequence[str] = (),
    ) -> None:
        self.pieces = [np.asarray(p, dtype=np.int64) for p in pieces]
        self.files = list(files) or [str(i) for i in range(len(self.pieces))]
        """Each piece's file (relative to its folder), for messages and tests."""
        self.prefixes = [np.asarray(p, dtype=np.int64) for p in prefixes]
        self.seq_len = seq_len
        self.random_crops = random_crops
        self._epoch_seed = (0, 0)

    def __len__(self) -> int:
        return len(self.pieces)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Which crops the following items use (the trainer calls it each epoch)."""
        self._epoch_seed = (int(seed), int(epoch))

    def crop_start(self, idx: int) -> int:
        events, prefix = self.pieces[idx], self.prefixes[idx]
        room = self.seq_len + 1 - len(prefix)
        spare = len(events) - room
        if spare <= 0 or not self.random_crops:
            return 0
        seed, epoch = self._epoch_seed
        return int(np.random.default_rng([seed, epoch, idx]).integers(0, spare + 1))

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        events, prefix = self.pieces[idx], self.prefixes[idx]
        start = self.crop_start(idx)
        room = self.seq_len + 1 - len(prefix)
        seq = torch.from_numpy(np.concatenate([prefix, events[start : start + room]]))
        n = len(seq) - 1  # real targets
        x = torch.full((self.seq_len,), T.PAD, dtype=torch.int64)
        y = torch.full((self.seq_len,), T.PAD, dtype=torch.int64)
        mask = torch.zeros(self.seq_len, dtype=torch.float32)
        x[:n], y[:n], mask[:n] = seq[:-1], seq[1:], 1.0
        mask[: max(len(prefix) - 1, 0)] = 0.0  # targets that are conditioning tokens
        return {"x": x, "y": y, "mask": mask}


@dataclass
class DataBundle:
    """What ``build_datasets`` returns: the two splits and what the model is built from."""

    train: EventCropDataset
    val: EventCropDataset
    conditions: ConditionTokens
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-able summary: source, counts, label balance, skipped files."""

    @property
    def model_info(self) -> dict[str, Any]:
        """Vocabulary, prefix length and conditioning tables (saved with checkpoints)."""
        return {
            "vocab_size": self.conditions.vocab_size,
            "n_prefix": self.conditions.n_prefix,
            "conditioning": {d: dict(t) for d, t in self.conditions.tables.items()},
        }


# -- building ----------------------------------------------------------------------------------


def build_datasets(cfg: DataConfig, *, log: Callable[[str], None] = print) -> DataBundle:
    """Prepare (once) and load the data of a profile's ``[data]`` table.

    Raises:
        DataError: a missing folder or labels file, a bad label row, or no usable piece.
    """
    if cfg.path and is_prepared(Path(cfg.path).expanduser()):
        return _from_prepared(cfg, Path(cfg.path).expanduser().resolve(), log)
    root = cache_dir_for(cfg.cache_dir)
    sweep_stale(root, depth=1)
    if cfg.source == "demo":
        name = f"demo-v{DEMO_CORPUS_VERSION}-n{cfg.n_pieces}-s{cfg.corpus_seed}-b{cfg.bars}"
        src_dir, labels_path = root / name, root / name / "labels.jsonl"
        source_id = name
    else:
        src_dir = Path(cfg.path).expanduser().resolve()
        if not src_dir.is_dir():
            raise DataError(f"{src_dir}: no such MIDI folder (data.path = {cfg.path!r})")
        labels_path = _labels_file(src_dir, cfg.labels)
        source_id = f"midi_dir:{src_dir}:{labels_path}"
    digest = hashlib.sha1(source_id.encode()).hexdigest()[:12]
    prepared_dir = root / "prepared" / f"mt-{cfg.source}-{digest}"
    if cfg.source == "demo" and not labels_path.is_file():
        generate_demo_corpus(src_dir, n_pieces=cfg.n_pieces, seed=cfg.corpus_seed, bars=cfg.bars)
        log(f"podium: generated the demo corpus ({cfg.n_pieces} pieces) in {src_dir}")
    fingerprint = {
        "source": cfg.source,
        "format": PREPARED_FORMAT,
        "files": _fingerprint(src_dir, labels_path),
        **({"keep_drums": True} if cfg.keep_drums else {}),  # absent: the caches made before it
    }
    meta = _read_meta(prepared_dir, fingerprint)
    if meta is None:
        labels = read_labels(labels_path) if labels_path is not None else {}
        meta = _prepare(src_dir, labels, prepared_dir, fingerprint, log, drums=cfg.keep_drums)
    pieces = load_token_pack(prepared_dir, len(meta["pieces"]))
    return _bundle(cfg, meta, pieces, src_dir, log)


def _labels_file(directory: Path, configured: str) -> Path | None:
    if configured:
        path = Path(configured).expanduser()
        path = path if path.is_absolute() else directory / path
        if not path.is_file():
            raise DataError(f"{path}: no such labels file (data.labels = {configured!r})")
        if path.suffix.lower() not in (".jsonl", ".csv"):
            raise DataError(f"{path}: a labels file must be .jsonl or .csv (data.labels)")
        return path
    for name in ("labels.jsonl", "labels.csv"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """A labels file -> {file (relative, posix) and its stem: {"sentiment": .., "genre": ..}}.
    Values are kept as written (names or integers); the profile's tables resolve them."""
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("file"), str):
                raise DataError(f"{path}:{n}: each line needs a JSON object with a 'file'")
            rows.append((f"{path}:{n}", obj))
    else:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
            if "file" not in cols:
                raise DataError(f"{path}: needs a 'file' column (file,sentiment,genre)")
            for n, row in enumerate(reader, start=2):
                rows.append((f"{path}:{n}", {k: row[c] for k, c in cols.items()}))
    out: dict[str, dict[str, str]] = {}
    for _where, obj in rows:
        label = {d: str(obj[d]).strip() for d in CONDITIONS if str(obj.get(d, "")).strip()}
        file = str(obj["file"]).strip().replace("\\", "/")
        out[file] = label
        out.setdefault(file.rsplit(".", 1)[0], label)
    return out


def _midi_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in MIDI_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def _fingerprint(directory: Path, labels: Path | None) -> str:
    h = hashlib.sha1()
    for p in [*_midi_files(directory), *([labels] if labels else [])]:
        st = p.stat()
        h.update(
            f"{p.relative_to(directory).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
        )
    return h.hexdigest()


def _prepare(
    src_dir: Path,
    labels: Mapping[str, Mapping[str, str]],
    prepared_dir: Path,
    fingerprint: dict[str, Any],
    log: Callable[[str], None],
    *,
    drums: bool = False,
) -> dict[str, Any]:
    files = _midi_files(src_dir)
    if not files:
        raise DataError(f"{src_dir}: no .mid/.midi files found")
    log(f"podium: preparing {len(files)} MIDI files from {src_dir} (once; cached)")
    arrays, pieces, skipped = [], [], []
    for p in files:
        rel = p.relative_to(src_dir).as_posix()
        try:
            midi = load_midi(p)
            events = T.encode_midi(drums_as_notes(midi) if drums else midi)
        except Exception as exc:  # one odd file must not end a thousand-file preparation
            skipped.append({"file": rel, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        if not len(events):
            skipped.append({"file": rel, "reason": "no notes"})
            continue
        label = labels.get(rel) or labels.get(rel.rsplit(".", 1)[0]) or {}
        arrays.append(np.append(events, T.END))
        pieces.append({"id": rel.rsplit(".", 1)[0], "file": rel, "labels": dict(label)})
    if not arrays:
        raise DataError(f"{src_dir}: none of the {len(files)} MIDI files is usable")
    meta = {"fingerprint": fingerprint, "pieces": pieces, "skipped": skipped}
    tmp = staging_dir(prepared_dir)
    try:
        n_tokens = save_token_pack(tmp, arrays, np.int16)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        publish_dir(tmp, prepared_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"podium: prepared {len(pieces)} pieces ({n_tokens} event tokens) in {prepared_dir}")
    return meta


def _read_meta(prepared_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        meta = json.loads((prepared_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = meta.get("fingerprint") == fingerprint and (prepared_dir / "tokens.npz").is_file()
    return meta if ok else None


def _bundle(
    cfg: DataConfig,
    meta: dict[str, Any],
    pieces: list[np.ndarray],
    src_dir: Path,
    log: Callable[[str], None],
) -> DataBundle:
    conditions = ConditionTokens.of(cfg.conditioning)
    kept, n_left_out = _labelled(conditions, meta["pieces"], pieces, src_dir, log)
    val_ids = set(split_val_ids([k.id for k in kept], cfg.val_fraction))
    train = [k for k in kept if k.id not in val_ids]
    val = [k for k in kept if k.id in val_ids]
    info = {"source": cfg.source, "source_dir": str(src_dir)}
    bundle = _datasets(cfg, conditions, train, val, info)
    bundle.info["n_skipped"] = len(meta["skipped"]) + n_left_out
    return bundle


def _from_prepared(cfg: DataConfig, path: Path, log: Callable[[str], None]) -> DataBundle:
    """A bundle from ``podium prepare`` output: its train and val splits as they are (the test
    split unused), each piece's labels turned into conditioning tokens as for a MIDI folder."""
    from podium.engine.families.music_transformer.prepare import MTTokenizer

    made_by = MTTokenizer().fingerprint()
    data = PreparedData.open(path, expect={k: made_by[k] for k in ("family", "tokenizer", "vocab")})
    conditions = ConditionTokens.of(cfg.conditioning)
    idx = data.indices("train") + data.indices("val")
    records = [data.records[i] for i in idx]
    kept, n_left_out = _labelled(conditions, records, [data.array(i) for i in idx], path, log)
    split = {r["file"]: r["split"] for r in records}
    train = [k for k in kept if split[k.file] == "train"]
    val = [k for k in kept if split[k.file] == "val"]
    for name, rows in (("train", train), ("val", val)):
        if not rows:
            raise DataError(
                f"{path}: no piece of the prepared {name} split has labels in data.conditioning's "
                "tables; label more pieces, or prepare again with another data.val_fraction"
            )
    info = {
        "source": "prepared",
        "source_dir": data.manifest.get("source_dir", ""),
        "prepared_dir": str(path),
    }
    bundle = _datasets(cfg, conditions, train, val, info)
    bundle.info["n_skipped"] = n_left_out  # prepare's own skips are in its report.json
    return bundle


@dataclass(frozen=True)
class _Labelled:
    """A piece whose labels all name entries of the profile's conditioning tables."""

    id: str
    file: str
    events: np.ndarray
    prefix: list[int]
    names: dict[str, str]


def _labelled(
    conditions: ConditionTokens,
    records: Sequence[Mapping[str, Any]],
    pieces: Sequence[np.ndarray],
    where: Path,
    log: Callable[[str], None],
) -> tuple[list[_Labelled], int]:
    """The pieces (records: ``file``, ``labels``, optional ``id``) whose labels resolve in every
    active table, and how many were left out (one warning line names a few).

    Raises:
        DataError: fewer than two pieces are left.
    """
    kept: list[_Labelled] = []
    unlabelled: list[str] = []
    for piece, events in zip(records, pieces, strict=True):
        names = {}
        for dim in conditions.dims:
            raw = piece["labels"].get(dim)
            names[dim] = conditions.resolve(dim, raw) if raw is not None else None
        missing = [d for d, v in names.items() if v is None]
        if missing:
            unlabelled.append(f"{piece['file']} ({', '.join(missing)})")
            continue
        pid = piece.get("id") or piece["file"].rsplit(".", 1)[0]
        kept.append(_Labelled(pid, piece["file"], events, conditions.prefix(names), names))
    if unlabelled:
        shown = ", ".join(unlabelled[:3]) + (
            f", and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        )
        log(
            f"podium: warning: left out {len(unlabelled)} pieces of {where} without a label "
            f"in data.conditioning's tables: {shown}"
        )
    if len(kept) < 2:
        raise DataError(
            f"{where}: {len(kept)} labelled pieces; need 2 or more (labels must be names or "
            f"indices of data.conditioning: "
            + "; ".join(f"{d}: {', '.join(conditions.names(d))}" for d in conditions.dims)
            + ")"
        )
    return kept, len(unlabelled)


def _datasets(
    cfg: DataConfig,
    conditions: ConditionTokens,
    train: list[_Labelled],
    val: list[_Labelled],
    info: dict[str, Any],
) -> DataBundle:
    def dataset(rows: list[_Labelled], random_crops: bool) -> EventCropDataset:
        return EventCropDataset(
            [r.events for r in rows],
            [r.prefix for r in rows],
            cfg.seq_len,
            random_crops=random_crops,
            files=[r.file for r in rows],
        )

    kept = train + val
    info = {
        **info,
        "n_pieces": len(kept),
        "n_train_pieces": len(train),
        "n_val_pieces": len(val),
        "n_tokens": int(sum(len(k.events) for k in kept)),
        "labels": {
            d: dict(sorted(Counter(k.names[d] for k in kept).items())) for d in conditions.dims
        },
    }
    return DataBundle(
        train=dataset(train, True), val=dataset(val, False), conditions=conditions, info=info
    )
