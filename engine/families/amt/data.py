"""Datasets for the ``amt`` family: pieces + text descriptions -> semantic tokens + events.

Two sources (``DataConfig.source``), or a ``podium prepare`` output:

* ``demo``: podium's generated corpus, made on first use in the cache; the texts are its
  ``description`` labels.
* ``midi_dir``: a folder of ``.mid``/``.midi`` files and a labels file (``labels.jsonl`` or
  ``labels.csv``, or ``data.labels``) with a ``file`` column and the text column
  (``data.text_column``). MIDI files without a label row are skipped with a warning.
* a directory ``podium prepare`` made with an ``amt`` profile, named by ``data.path`` (any
  source): its pieces' events and texts as they are, its train/val split (the test split
  unused). The clustering is fitted here, over those texts, exactly as for a MIDI folder
  (``fit_texts``), kept in ``<cache>/prepared/amt-semantic-<hash>.json``, and each piece's
  SEMANTIC_k is put after its START.

Preparation fits the semantic clustering on the text of every piece holding a note (``fit_texts``),
tokenises every piece once (``tokens.encode_midi``, with its SEMANTIC_k), and stores
``tokens.npz``, ``semantic.json`` and ``meta.json`` in ``<cache>/prepared/amt-<hash>/``,
staged and renamed into place, re-used while the source's fingerprint and every tokeniser and
clustering setting are unchanged. Windowing and the split are redone on every build.

Use::

    bundle = build_datasets(DataConfig(source="demo", n_pieces=64))
    bundle.train[0]  # {"x": (seq_len,) int64, "y": (seq_len,) int64, "mask": (seq_len,) float32}
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
from podium.engine.families.amt.config import DataConfig
from podium.engine.families.amt.semantic import SemanticModel, fit_semantic
from podium.engine.families.amt.tokens import START, AMTVocab, encode_midi, vocab_of

PREPARED_FORMAT = 2
"""Bumped when the prepared files, the tokeniser or the clustering change."""
DEMO_CORPUS_VERSION = 1
"""Part of the demo corpus directory name (the same corpus the ``cp`` family reads)."""
MIDI_SUFFIXES = (".mid", ".midi")
PREFIX = 2
"""START and SEMANTIC_k: every training window begins with them."""


class AMTSequenceDataset(Dataset):
    """Fixed-length examples cut from tokenised pieces.

    A piece of L tokens gives one example if L <= seq_len + 1, else windows: window 0 is tokens
    ``[0, seq_len]``; window w >= 1 is START, SEMANTIC_k and the next ``seq_len - 1`` tokens, so
    every window is conditioned on its piece's semantic token and every token after the prefix
    is a target once. Padding is PAD with mask 0.
    """

    def __init__(
        self, pieces: Sequence[np.ndarray], seq_len: int, piece_ids: Sequence[str] = ()
    ) -> None:
        self.seq_len = seq_len
        self.pieces = [np.asarray(p, dtype=np.int64) for p in pieces]
        self.piece_ids = list(piece_ids) or [str(i) for i in range(len(self.pieces))]
        """Each piece's file (relative posix path), in ``pieces``' order."""
        body = seq_len - PREFIX + 1  # new tokens per continuation window
        self.windows: list[tuple[int, int]] = []
        for i, p in enumerate(self.pieces):
            rest = max(0, len(p) - (seq_len + 1))
            self.windows += [(i, w) for w in range(1 + -(-rest // body))]

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, idx: int) -> np.ndarray:
        i, w = self.windows[idx]
        p, s = self.pieces[i], self.seq_len
        if w == 0:
            return p[: s + 1]
        body = s - PREFIX + 1
        start = s + 1 + (w - 1) * body
        return np.concatenate([p[:PREFIX], p[start : start + body]])

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        w = torch.from_numpy(self.window(idx))
        n = w.shape[0] - 1
        x = torch.zeros(self.seq_len, dtype=torch.int64)
        y = torch.zeros(self.seq_len, dtype=torch.int64)
        mask = torch.zeros(self.seq_len, dtype=torch.float32)
        x[:n], y[:n], mask[:n] = w[:-1], w[1:], 1.0
        return {"x": x, "y": y, "mask": mask}


@dataclass
class DataBundle:
    """The two splits plus what a run records about its data."""

    train: AMTSequenceDataset
    val: AMTSequenceDataset
    vocab: AMTVocab
    semantic: SemanticModel
    prepared_dir: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_info(self) -> dict[str, Any]:
        """Saved with every checkpoint: the vocabulary layout and the fitted clustering, so a
        run builds its model and maps ``--text`` to a token without its data folder."""
        return {"vocab": self.vocab.to_dict(), "semantic": self.semantic.to_dict()}


@dataclass(frozen=True)
class _Piece:
    id: str
    path: Path
    file: str
    text: str


def cache_root(cfg: DataConfig) -> Path:
    return cache_dir_for(cfg.cache_dir)


def build_datasets(cfg: DataConfig, *, log: Callable[[str], None] = print) -> DataBundle:
    """Prepare (once) and load the data of a profile's ``[data]`` table.

    Raises:
        DataError: a missing folder or labels file, a label row without text, no usable MIDI;
            a prepared directory made by another tokeniser or with an empty split.
    """
    if cfg.path and is_prepared(Path(cfg.path).expanduser()):
        return _from_prepared(cfg, Path(cfg.path).expanduser().resolve(), log)
    root = cache_root(cfg)
    sweep_stale(root, depth=1)
    vocab = vocab_of(cfg)
    if cfg.source == "demo":
        name = f"demo-v{DEMO_CORPUS_VERSION}-n{cfg.n_pieces}-s{cfg.corpus_seed}-b{cfg.bars}"
        src_dir = root / name
        labels_path = src_dir / "labels.jsonl"
        fingerprint: dict[str, Any] = {"demo": name}
    else:
        src_dir = Path(cfg.path).expanduser().resolve()
        if not src_dir.is_dir():
            raise DataError(f"{src_dir}: no such MIDI folder (data.path = {cfg.path!r})")
        labels_path = _labels_path(cfg, src_dir)
        fingerprint = {"files": _dir_fingerprint(src_dir, labels_path)}
    fingerprint |= {
        "source": cfg.source,
        "format": PREPARED_FORMAT,
        "vocab": vocab.to_dict(),
        "text_column": cfg.text_column,
        "semantic": [cfg.min_semantic, cfg.max_semantic, cfg.cluster_seed, cfg.max_terms],
        **({"keep_drums": True} if cfg.keep_drums else {}),  # absent: the caches made before it
    }
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    prepared_dir = root / "prepared" / f"amt-{cfg.source}-{digest}"
    meta = _read_meta(prepared_dir, fingerprint)
    if meta is None:
        if cfg.source == "demo" and not labels_path.is_file():
            generate_demo_corpus(
                src_dir, n_pieces=cfg.n_pieces, seed=cfg.corpus_seed, bars=cfg.bars
            )
            log(f"podium: generated the demo corpus ({cfg.n_pieces} pieces) in {src_dir}")
        pieces = _labelled_pieces(src_dir, labels_path, cfg.text_column, log)
        meta = _prepare(cfg, vocab, pieces, src_dir, prepared_dir, fingerprint, log)
    semantic = SemanticModel.from_dict(
        json.loads((prepared_dir / "semantic.json").read_text(encoding="utf-8"))
    )
    arrays = load_token_pack(prepared_dir, len(meta["pieces"]))
    ids = [p["id"] for p in meta["pieces"]]
    val_ids = set(split_val_ids(ids, cfg.val_fraction))
    in_val = [row["id"] in val_ids for row in meta["pieces"]]
    files = [row["file"] for row in meta["pieces"]]

    def split(held_out: bool) -> AMTSequenceDataset:
        keep = [i for i, v in enumerate(in_val) if v == held_out]
        return AMTSequenceDataset([arrays[i] for i in keep], cfg.seq_len, [files[i] for i in keep])

    train, val = split(False), split(True)
    info = {
        "source": cfg.source,
        "source_dir": str(src_dir),
        "prepared_dir": str(prepared_dir),
        "n_pieces": len(ids),
        "n_train_examples": len(train),
        "n_val_examples": len(val),
        "semantic_k": semantic.k,
        "silhouette": semantic.silhouette,
        "n_skipped": len(meta["skipped"]),
    }
    return DataBundle(train, val, vocab, semantic, prepared_dir, info)


def fit_texts(cfg: DataConfig, texts: Sequence[str]) -> tuple[SemanticModel, np.ndarray]:
    """The semantic clustering of ``texts`` with the ``[data]`` table's settings, and each
    text's cluster: the one fit both a MIDI folder and a prepared directory go through, so the
    two give the same tokens for the same pieces (given in the same order: sorted by path)."""
    return fit_semantic(
        list(texts),
        min_k=cfg.min_semantic,
        max_k=cfg.max_semantic,
        seed=cfg.cluster_seed,
        max_terms=cfg.max_terms,
    )


def with_semantic(events: np.ndarray, vocab: AMTVocab, k: int) -> np.ndarray:
    """A piece's events (``START ... END``) with SEMANTIC_k after START: what
    ``encode_midi(midi, vocab, semantic=k)`` gives."""
    return np.concatenate([events[:1], [vocab.semantic(k)], events[1:]]).astype(np.int64)


def _from_prepared(cfg: DataConfig, path: Path, log: Callable[[str], None]) -> DataBundle:
    """A bundle from ``podium prepare`` output: its train and val pieces (sorted by path, the
    order a MIDI folder is read in), the clustering fitted over their texts, SEMANTIC_k put
    after each piece's START."""
    from podium.engine.families.amt.prepare import SETTINGS, tokenizer_of

    tokenizer = tokenizer_of(cfg)
    made_by = tokenizer.fingerprint()
    data = PreparedData.open(path, expect={k: made_by[k] for k in SETTINGS})
    used = [i for i, r in enumerate(data.records) if r["split"] in ("train", "val")]
    used.sort(key=lambda i: PurePosixPath(data.records[i]["file"]))
    records = [data.records[i] for i in used]
    if not any(r["split"] == "train" for r in records) or not any(
        r["split"] == "val" for r in records
    ):
        raise DataError(f"{path}: the prepared data has an empty train or val split")
    field_name = tokenizer.text_field
    missing = [r["file"] for r in records if not str(r["labels"].get(field_name, "")).strip()]
    if missing:  # the tokeniser refuses such pieces, so only a hand-edited directory has them
        raise DataError(f"{path}: {missing[0]} has no {field_name!r} label; run podium prepare")
    texts = [str(r["labels"][field_name]).strip() for r in records]
    semantic, labels = _cached_fit(cfg, texts, log)
    vocab = tokenizer.vocab
    pieces: dict[str, tuple[list[np.ndarray], list[str]]] = {"train": ([], []), "val": ([], [])}
    for i, r, k in zip(used, records, labels.tolist(), strict=True):
        events = np.asarray(data.array(i), dtype=np.int64)
        if len(events) < 2 or events[0] != START:
            raise DataError(f"{path}: {r['file']}: its tokens do not start with START")
        arrays, files = pieces[r["split"]]
        arrays.append(with_semantic(events, vocab, k))
        files.append(r["file"])
    train = AMTSequenceDataset(pieces["train"][0], cfg.seq_len, pieces["train"][1])
    val = AMTSequenceDataset(pieces["val"][0], cfg.seq_len, pieces["val"][1])
    info = {
        "source": "prepared",
        "source_dir": data.manifest.get("source_dir", ""),
        "prepared_dir": str(path),
        "n_pieces": len(records),
        "n_train_examples": len(train),
        "n_val_examples": len(val),
        "semantic_k": semantic.k,
        "silhouette": semantic.silhouette,
        "n_skipped": 0,
    }
    return DataBundle(train, val, vocab, semantic, path, info)


def _cached_fit(
    cfg: DataConfig, texts: list[str], log: Callable[[str], None]
) -> tuple[SemanticModel, np.ndarray]:
    """``fit_texts``, kept in the cache by the texts and the clustering settings: fitting k-means
    for every k and the silhouettes is the slow part of a build, and a prepared directory is
    read by every run of a sweep. The cached labels are each text's fitted cluster (not a
    re-assignment, which could differ at a tie)."""
    key = json.dumps(
        [texts, cfg.min_semantic, cfg.max_semantic, cfg.cluster_seed, cfg.max_terms],
        ensure_ascii=False,
    )
    digest = hashlib.sha1(f"{PREPARED_FORMAT}\0{key}".encode()).hexdigest()[:16]
    cached = cache_root(cfg) / "prepared" / f"amt-semantic-{digest}.json"
    try:
        saved = json.loads(cached.read_text(encoding="utf-8"))
        labels = np.asarray(saved["labels"], dtype=np.int64)
        if len(labels) == len(texts):
            return SemanticModel.from_dict(saved["semantic"]), labels
    except (OSError, ValueError, KeyError, TypeError):
        pass
    semantic, labels = fit_texts(cfg, texts)
    log(
        f"podium: semantic tokens over {len(texts)} prepared pieces: k={semantic.k} "
        f"(silhouette {semantic.silhouette:.3f})"
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    body = {"semantic": semantic.to_dict(), "labels": labels.tolist()}
    tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
    tmp.replace(cached)  # whole or absent, even with two builds at once
    return semantic, labels


# -- sources ---------------------------------------------------------------------------------


def _labels_path(cfg: DataConfig, src_dir: Path) -> Path:
    if cfg.labels:
        path = (src_dir / Path(cfg.labels).expanduser()).resolve()
        if not path.is_file():
            raise DataError(f"{path}: no such labels file (data.labels = {cfg.labels!r})")
        return path
    for name in ("labels.jsonl", "labels.csv"):
        if (src_dir / name).is_file():
            return src_dir / name
    raise DataError(
        f"{src_dir}: no labels.jsonl or labels.csv (each row: file and {cfg.text_column}); "
        "or name one with data.labels"
    )


def _midi_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in MIDI_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and p.is_file()
    )


def _dir_fingerprint(directory: Path, labels: Path) -> str:
    h = hashlib.sha1()
    for p in sorted({*_midi_files(directory), labels}):
        st = p.stat()
        h.update(f"{p.as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_labels(path: Path, text_column: str) -> dict[str, str]:
    """file (and id) -> text, from a JSONL or CSV labels file.

    Raises:
        DataError: naming the file and line of a malformed row or one without text.
    """
    rows: list[tuple[str, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: not a JSON object")
            rows.append((f"{path}:{n}", obj))
    else:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if "file" not in fields or text_column not in fields:
                raise DataError(f"{path}: needs the columns file,{text_column} (has {fields})")
            for n, row in enumerate(reader, start=2):
                rows.append((f"{path}:{n}", {(k or "").strip(): v for k, v in row.items()}))
    out: dict[str, str] = {}
    for where, row in rows:
        name = str(row.get("file") or row.get("id") or "").strip()
        if not name:
            raise DataError(f"{where}: no 'file' (or 'id') in this row")
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: no text in column {text_column!r} (data.text_column)")
        out[name] = text.strip()
        if row.get("id"):
            out[str(row["id"])] = text.strip()
    return out


def _labelled_pieces(
    src_dir: Path, labels_path: Path, text_column: str, log: Callable[[str], None]
) -> list[_Piece]:
    files = _midi_files(src_dir)
    if not files:
        raise DataError(f"{src_dir}: no .mid/.midi files found")
    texts = read_labels(labels_path, text_column)
    pieces, unlabelled = [], []
    for p in files:
        rel = p.relative_to(src_dir).as_posix()
        stem = rel.rsplit(".", 1)[0]
        text = texts.get(rel) or texts.get(stem) or texts.get(p.stem) or texts.get(p.name)
        if text is None:
            unlabelled.append(rel)
            continue
        pieces.append(_Piece(id=stem, path=p, file=rel, text=text))
    if unlabelled:
        more = f", and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        log(
            f"podium: warning: {len(unlabelled)} MIDI files have no row in {labels_path}, "
            f"skipped: {', '.join(unlabelled[:3])}{more}"
        )
    if not pieces:
        raise DataError(f"{labels_path}: labels none of the {len(files)} MIDI files in {src_dir}")
    return pieces


# -- preparation -----------------------------------------------------------------------------


def _prepare(
    cfg: DataConfig,
    vocab: AMTVocab,
    pieces: list[_Piece],
    src_dir: Path,
    prepared_dir: Path,
    fingerprint: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    log(f"podium: preparing {len(pieces)} MIDI files from {src_dir} (once; in {prepared_dir})")
    events, kept, skipped, readable = [], [], [], 0
    for piece in pieces:
        try:
            midi = load_midi(piece.path)
        except Exception as exc:  # one odd file must not end the preparation
            skipped.append({"file": piece.file, "reason": str(exc)})
            continue
        readable += 1
        tokens = encode_midi(drums_as_notes(midi) if cfg.keep_drums else midi, vocab)
        if len(tokens) <= 2:  # START, END
            skipped.append({"file": piece.file, "reason": "no notes"})
            continue
        events.append(tokens)
        kept.append(piece)
    if skipped:
        log(f"podium: warning: skipped {len(skipped)} MIDI files: {skipped[:3]}")
    if not readable:
        raise DataError(f"{src_dir}: none of the {len(pieces)} labelled MIDI files is readable")
    if not kept:
        raise DataError(f"{src_dir}: no labelled MIDI file holds a note")
    # Fitted over the pieces that are kept, not every readable one: a prepared directory (which
    # never holds an empty piece) then gives the same clustering for the same files.
    semantic, labels = fit_texts(cfg, [p.text for p in kept])
    arrays = [with_semantic(e, vocab, k) for e, k in zip(events, labels.tolist(), strict=True)]
    rows = [
        {"id": p.id, "file": p.file, "semantic": k, "text": p.text}
        for p, k in zip(kept, labels.tolist(), strict=True)
    ]
    meta = {"fingerprint": fingerprint, "pieces": rows, "skipped": skipped}
    prepared_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(prepared_dir)
    try:
        save_token_pack(tmp, arrays, np.int32)
        (tmp / "semantic.json").write_text(json.dumps(semantic.to_dict()) + "\n", encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        publish_dir(tmp, prepared_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"podium: prepared {len(rows)} pieces; semantic tokens: k={semantic.k} "
        f"(silhouette {semantic.silhouette:.3f})"
    )
    return meta


def _read_meta(prepared_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        meta = json.loads((prepared_dir / "meta.json").read_text(encoding="utf-8"))
        ok = meta.get("fingerprint") == json.loads(json.dumps(fingerprint))
        files = all((prepared_dir / n).is_file() for n in ("tokens.npz", "semantic.json"))
        return meta if ok and files else None
    except (OSError, ValueError):
        return None
