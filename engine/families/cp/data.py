"""Datasets for the compound-word (CP) family: sources -> prepared CP tokens -> training windows.

Three sources (``DataConfig.source``):

* ``demo``: podium's generated corpus (``demo_corpus``), made on first use in the cache directory.
* ``emopia``: the EMOPIA dataset layout: ``midis/Q{1-4}_<id>_<clip>.mid`` (or the files directly in
  the directory); the quadrant comes from the file name, the key from ``key_mode_tempo.csv`` when
  present, else from the notes (Krumhansl-Schmuckler).
* ``midi_dir``: any folder of ``.mid``/``.midi`` files, labelled by ``labels.jsonl`` (the format
  the demo corpus writes), ``labels.csv`` (``file,emotion[,key]``) or a ``Q1_`` .. ``Q4_`` name
  prefix.

Preparation tokenises every piece once and stores ``dictionary.json``, ``tokens.npz`` and
``meta.json`` in ``<cache>/prepared/<source>-<hash>/``, written in a temporary directory and
renamed into place. It is re-used while the source's fingerprint (demo parameters, or the list of
files with sizes and mtimes) and the dictionary are unchanged; windowing and the train/val split
are cheap and are redone on every build, so ``seq_len`` and ``val_fraction`` can change freely.

Use::

    bundle = build_datasets(DataConfig(source="demo", n_pieces=400))
    bundle.train[0]   # {"x": (seq_len, 9) int64, "y": (seq_len, 9) int64, "mask": (seq_len,) float32}
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from podium.engine.data.cache import cache_dir_for, publish_dir, staging_dir, sweep_stale
from podium.engine.data.demo_corpus import generate_demo_corpus
from podium.engine.data.midi_io import drums_as_notes, estimate_key, load_midi, piano_notes
from podium.engine.data.prepare.progress import Progress
from podium.engine.data.prepared import PreparedData, is_prepared
from podium.engine.data.splits import split_val_ids
from podium.engine.data.token_pack import load_token_pack, save_token_pack
from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as cp_vocab
from podium.engine.families.cp.config import DataConfig
from podium.engine.families.cp.keys import PAIRS, pair_table
from podium.engine.families.cp.tokens import encode_midi

PREPARED_FORMAT = 1
"""Bumped when the prepared files or the tokeniser change, so old caches are redone."""
DEMO_CORPUS_VERSION = 1
"""Part of the demo corpus directory name; bump it when the generator's output changes."""
MIDI_SUFFIXES = (".mid", ".midi")
_QUADRANT_PREFIX = re.compile(r"^(Q[1-4])(?:[_\-. ]|$)", re.IGNORECASE)


def cache_root(cfg: DataConfig) -> Path:
    """The cache directory of this data (``cfg.cache_dir`` or podium's cache)."""
    return cache_dir_for(cfg.cache_dir)


# -- the dataset -----------------------------------------------------------------------------


class CPSequenceDataset(Dataset):
    """Fixed-length training examples cut from tokenised pieces.

    A piece of L tokens gives one example if L <= seq_len + 1, else consecutive windows: window 0
    is tokens ``[0, seq_len]``; window k >= 1 is the piece's Emotion token followed by tokens
    ``[k*seq_len + 1, (k+1)*seq_len]``, so every token after the first is a target exactly once and
    every window is conditioned on the piece's emotion and key. Padding is zeros with mask 0.
    Item order is fixed (piece, then window); shuffling is the trainer's job.
    """

    def __init__(
        self,
        pieces: Sequence[np.ndarray],
        seq_len: int,
        piece_ids: Sequence[str] = (),
        *,
        transpose: int = 0,
    ) -> None:
        self.seq_len = seq_len
        self.transpose = transpose
        self._epoch_seed: tuple[int, int] = (0, 0)
        self.pieces = [np.asarray(p, dtype=np.int64) for p in pieces]
        self.piece_ids = list(piece_ids) or [str(i) for i in range(len(self.pieces))]
        self.windows: list[tuple[int, int]] = []  # (piece index, window index)
        for i, p in enumerate(self.pieces):
            n_windows = 1 + max(0, -(-(len(p) - 1 - seq_len) // seq_len))
            self.windows += [(i, k) for k in range(n_windows)]

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, idx: int) -> np.ndarray:
        """The (<= seq_len + 1, 9) tokens of example ``idx``, before padding."""
        i, k = self.windows[idx]
        p, s = self.pieces[i], self.seq_len
        if k == 0:
            return p[: s + 1]
        return np.concatenate([p[:1], p[k * s + 1 : (k + 1) * s + 1]])

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Which draw of the transposition the following items use (the trainer calls it)."""
        self._epoch_seed = (int(seed), int(epoch))

    def shift_for(self, idx: int) -> int:
        """The semitones example ``idx`` is shifted by in the current epoch (0 when off)."""
        if not self.transpose:
            return 0
        w = self.window(idx)
        pitches = w[:, _PITCH][w[:, _PITCH] > 0] - 1 + cp_vocab.PITCH_MIN
        lo, hi = -self.transpose, self.transpose
        if len(pitches):
            lo = max(lo, cp_vocab.PITCH_MIN - int(pitches.min()))
            hi = min(hi, cp_vocab.PITCH_MAX - int(pitches.max()))
        if lo >= hi:
            return 0
        seed, epoch = self._epoch_seed
        return int(np.random.default_rng([seed, epoch, idx]).integers(lo, hi + 1))

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        w = transpose_tokens(self.window(idx), self.shift_for(idx))
        w = torch.from_numpy(w)  # (n <= seq_len + 1, 9)
        n = w.shape[0] - 1  # real targets
        x = torch.zeros(self.seq_len, w.shape[1], dtype=torch.int64)
        y = torch.zeros(self.seq_len, w.shape[1], dtype=torch.int64)
        mask = torch.zeros(self.seq_len, dtype=torch.float32)
        x[:n] = w[:-1]
        y[:n] = w[1:]
        mask[:n] = 1.0
        return {"x": x, "y": y, "mask": mask}

    def n_tokens(self) -> int:
        """Real (unpadded) target tokens over all examples."""
        return sum(len(p) - 1 for p in self.pieces if len(p) > 1)


_PITCH, _CHORD, _KEY = (cp_vocab.FIELDS.index(f) for f in ("pitch", "chord", "key"))
_N_QUALITIES = len(cp_vocab.CHORD_QUALITIES)


def transpose_tokens(tokens: np.ndarray, shift: int) -> np.ndarray:
    """CP tokens (T, 9) moved by ``shift`` semitones: pitches, chord roots and the key's tonic.

    The caller keeps the pitches in range (``CPSequenceDataset.shift_for``); CONTI, N.C. and
    Other stay what they are. Returns a new array (``tokens`` itself when ``shift`` is 0).
    """
    if not shift:
        return tokens
    out = tokens.copy()
    p = out[:, _PITCH]
    p[p > 0] += shift
    c = out[:, _CHORD]
    named = (c >= 2) & (c < 2 + 12 * _N_QUALITIES)
    root, quality = np.divmod(c[named] - 2, _N_QUALITIES)
    c[named] = 2 + ((root + shift) % 12) * _N_QUALITIES + quality
    k = out[:, _KEY]
    keyed = k > 0
    minor, tonic = np.divmod(k[keyed] - 1, 12)
    k[keyed] = 1 + 12 * minor + (tonic + shift) % 12
    return out


@dataclass
class DataBundle:
    """What ``build_datasets`` returns: the two splits plus what a run records about its data."""

    train: CPSequenceDataset
    val: CPSequenceDataset
    vocab_sizes: dict[str, int]
    """Classes per CP field (the fixed dictionary), ordered like ``cp_vocab.FIELDS``."""
    prepared_dir: Path
    """Where the tokenised pieces and the dictionary are stored."""
    n_pieces: int
    """Pieces that tokenised (train + val)."""
    info: dict[str, Any] = field(default_factory=dict)
    """JSON-able summary: source, paths, counts, skipped files, emotion balance."""
    emotion_keys: dict[str, dict[str, int]] = field(default_factory=dict)
    """Training pieces per (emotion, key): what a sample that leaves its key blank draws from
    (``keys.draw_conditioning``)."""

    @property
    def model_info(self) -> dict[str, Any]:
        """What the model and its sampler need of this data (saved with checkpoints)."""
        return {
            "vocab_sizes": dict(self.vocab_sizes),
            PAIRS: {e: dict(k) for e, k in self.emotion_keys.items()},
        }


# -- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PieceSpec:
    id: str
    path: Path
    file: str  # path relative to the dataset directory (posix)
    emotion: str
    key: str | None  # None: estimate from the notes
    extra: dict[str, Any] = field(default_factory=dict)  # other labels (genre, description...)


def build_datasets(cfg: DataConfig, *, log: Callable[[str], None] = print) -> DataBundle:
    """Prepare (once) and load the data a profile's ``[data]`` table names.

    Args:
        cfg: the data config.
        log: receives the few lines worth telling a user (corpus generated, data prepared, files
            skipped); a build that re-uses prepared data says nothing.

    Raises:
        DataError: the dataset directory is missing or holds no usable, labelled MIDI files.
    """
    if cfg.path and is_prepared(Path(cfg.path).expanduser()):
        return _from_prepared(cfg, Path(cfg.path).expanduser().resolve())
    root = cache_root(cfg)
    sweep_stale(root, depth=1)  # what killed runs left half-built
    if cfg.source == "demo":
        name = f"demo-v{DEMO_CORPUS_VERSION}-n{cfg.n_pieces}-s{cfg.corpus_seed}-b{cfg.bars}"
        src_dir = root / name
        source_id = name
        fingerprint: dict[str, Any] = {"demo": name}
    else:
        src_dir = Path(cfg.path).expanduser().resolve()
        if not src_dir.is_dir():
            raise DataError(f"{src_dir}: no such dataset directory (data.path = {cfg.path!r})")
        source_id = f"{cfg.source}:{src_dir}"
        fingerprint = {"files": _dir_fingerprint(src_dir)}
    fingerprint |= {
        "source": cfg.source,
        "format": PREPARED_FORMAT,
        "vocab": cp_vocab.VOCAB_VERSION,
        **({"keep_drums": True} if cfg.keep_drums else {}),  # absent: the caches made before it
    }
    digest = hashlib.sha1(source_id.encode()).hexdigest()[:12]
    prepared_dir = root / "prepared" / f"{cfg.source}-{digest}"

    meta = _read_prepared_meta(prepared_dir, fingerprint)
    if meta is None:
        if cfg.source == "demo" and not (src_dir / "labels.jsonl").is_file():
            generate_demo_corpus(
                src_dir, n_pieces=cfg.n_pieces, seed=cfg.corpus_seed, bars=cfg.bars
            )
            log(f"podium: generated the demo corpus ({cfg.n_pieces} pieces) in {src_dir}")
        if cfg.source == "emopia":
            specs, unusable = _emopia_pieces(src_dir)
        else:
            specs, unusable = _midi_dir_pieces(src_dir), []
        meta = _prepare(
            specs, unusable, src_dir, prepared_dir, fingerprint, log, drums=cfg.keep_drums
        )
    pieces = load_token_pack(prepared_dir, len(meta["pieces"]))
    return _bundle(cfg, meta, pieces, prepared_dir, src_dir)


def _bundle(
    cfg: DataConfig,
    meta: dict[str, Any],
    pieces: list[np.ndarray],
    prepared_dir: Path,
    src_dir: Path,
) -> DataBundle:
    ids = [p["id"] for p in meta["pieces"]]
    val_set = set(split_val_ids(ids, cfg.val_fraction))
    train_i = [i for i, pid in enumerate(ids) if pid not in val_set]
    val_i = [i for i, pid in enumerate(ids) if pid in val_set]
    train = CPSequenceDataset(
        [pieces[i] for i in train_i],
        cfg.seq_len,
        [ids[i] for i in train_i],
        transpose=cfg.transpose,
    )
    val = CPSequenceDataset([pieces[i] for i in val_i], cfg.seq_len, [ids[i] for i in val_i])
    info = {
        "source": cfg.source,
        "source_dir": str(src_dir),
        "prepared_dir": str(prepared_dir),
        "n_pieces": len(ids),
        "n_train_pieces": len(train_i),
        "n_val_pieces": len(val_i),
        "n_train_examples": len(train),
        "n_val_examples": len(val),
        "n_tokens": int(sum(len(p) for p in pieces)),
        "emotions": dict(sorted(Counter(p["emotion"] for p in meta["pieces"]).items())),
        "n_skipped": len(meta["skipped"]),
        "skipped": meta["skipped"][:20],
    }
    return DataBundle(
        train=train,
        val=val,
        vocab_sizes=cp_vocab.vocab_sizes(),
        prepared_dir=prepared_dir,
        n_pieces=len(ids),
        info=info,
        emotion_keys=pair_table(
            (meta["pieces"][i]["emotion"], meta["pieces"][i]["key"]) for i in train_i
        ),
    )


def _from_prepared(cfg: DataConfig, path: Path) -> DataBundle:
    """A bundle from ``podium prepare`` output: its splits as they are (the test split unused),
    each piece's emotion and key read back from its first token."""
    from podium.engine.families.cp.prepare import CPTokenizer

    made_by = CPTokenizer().fingerprint()
    data = PreparedData.open(path, expect={k: made_by[k] for k in ("family", "tokenizer", "vocab")})
    split = {}
    for name in ("train", "val"):
        idx = data.indices(name)
        split[name] = (idx, [np.asarray(data.array(i), dtype=np.int64) for i in idx])
    if not split["train"][0] or not split["val"][0]:
        raise DataError(f"{path}: the prepared data has an empty train or val split")
    ids = {n: [data.records[i]["file"] for i in idx] for n, (idx, _) in split.items()}
    train = CPSequenceDataset(split["train"][1], cfg.seq_len, ids["train"], transpose=cfg.transpose)
    val = CPSequenceDataset(split["val"][1], cfg.seq_len, ids["val"])
    names = cp_vocab.VOCAB.names

    def label(piece: np.ndarray) -> tuple[str, str]:
        head = piece[0]
        return names["emotion"][int(head[_EMOTION])], names["key"][int(head[_KEY])]

    emotions = Counter(label(p)[0] for n in split for p in split[n][1])
    info = {
        "source": "prepared",
        "source_dir": data.manifest.get("source_dir", ""),
        "prepared_dir": str(path),
        "n_pieces": len(train.pieces) + len(val.pieces),
        "n_train_pieces": len(train.pieces),
        "n_val_pieces": len(val.pieces),
        "n_train_examples": len(train),
        "n_val_examples": len(val),
        "n_tokens": int(sum(len(p) for n in split for p in split[n][1])),
        "emotions": dict(sorted(emotions.items())),
    }
    return DataBundle(
        train=train,
        val=val,
        vocab_sizes=cp_vocab.vocab_sizes(),
        prepared_dir=path,
        n_pieces=info["n_pieces"],
        info=info,
        emotion_keys=pair_table(label(p) for p in train.pieces),
    )


_EMOTION = cp_vocab.FIELDS.index("emotion")


# -- sources ---------------------------------------------------------------------------------


def _midi_files(directory: Path) -> list[Path]:
    """MIDI files under ``directory``, recursively, sorted; hidden files and folders skipped."""
    out = []
    for p in directory.rglob("*"):
        rel = p.relative_to(directory).parts
        if (
            p.suffix.lower() in MIDI_SUFFIXES
            and not any(part.startswith(".") for part in rel)
            and p.is_file()
        ):
            out.append(p)
    return sorted(out)


def _dir_fingerprint(directory: Path) -> str:
    """A hash of every MIDI and label file's relative path, size and mtime."""
    h = hashlib.sha1()
    names = ("labels.jsonl", "labels.csv", "key_mode_tempo.csv")
    extra = [p for p in directory.rglob("*") if p.name in names and p.is_file()]
    for p in sorted({*_midi_files(directory), *extra}):
        st = p.stat()
        h.update(
            f"{p.relative_to(directory).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
        )
    return h.hexdigest()


def _emopia_pieces(directory: Path) -> tuple[list[_PieceSpec], list[tuple[str, str]]]:
    midi_root = directory / "midis" if (directory / "midis").is_dir() else directory
    files = _midi_files(midi_root)
    if not files:
        raise DataError(
            f"{midi_root}: no .mid/.midi files found (expected the EMOPIA layout: midis/Q1_*.mid)"
        )
    keys = _emopia_keys(directory)
    specs, unusable = [], []
    for p in files:
        rel = p.relative_to(midi_root).as_posix()
        m = _QUADRANT_PREFIX.match(p.name)
        if not m:
            unusable.append((rel, "no Q1_ .. Q4_ prefix in the file name"))
            continue
        specs.append(
            _PieceSpec(
                id=p.stem, path=p, file=rel, emotion=m.group(1).upper(), key=keys.get(p.stem)
            )
        )
    return specs, unusable


def _emopia_keys(directory: Path) -> dict[str, str]:
    """Clip stem -> key from EMOPIA's ``key_mode_tempo.csv``, wherever it sits under ``directory``.

    Tolerant of the versions in the wild: the clip column is the first of name/clip/clip_name/
    file/filename/id, the key column keyname/key, the optional mode column keymode/mode; key names
    follow ``cp_vocab.parse_key`` (EMOPIA writes ``C`` for C major, ``c`` for C minor). Rows that do
    not parse are left to key estimation.
    """
    found = sorted(directory.rglob("key_mode_tempo.csv"))
    if not found:
        return {}
    out: dict[str, str] = {}
    try:
        with found[0].open(newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
            name_col = _first(cols, ("name", "clip", "clip_name", "file", "filename", "id"))
            key_col = _first(cols, ("keyname", "key", "key_name"))
            mode_col = _first(cols, ("keymode", "mode", "key_mode"))
            if name_col is None or key_col is None:
                return {}
            for row in reader:
                stem = Path((row.get(name_col) or "").strip()).stem
                mode = (row.get(mode_col) or "") if mode_col else ""
                key = cp_vocab.parse_key((row.get(key_col) or "").strip(), mode_hint=mode)
                if stem and key:
                    out[stem] = key
    except (OSError, csv.Error):
        return {}
    return out


def _first(cols: dict[str, str], names: Sequence[str]) -> str | None:
    return next((cols[n] for n in names if n in cols), None)


def _midi_dir_pieces(directory: Path) -> list[_PieceSpec]:
    files = _midi_files(directory)
    if not files:
        raise DataError(f"{directory}: no .mid/.midi files found")
    labels = _read_labels(directory)
    specs = []
    for p in files:
        rel = p.relative_to(directory).as_posix()
        stem_id = rel.rsplit(".", 1)[0]
        label = labels.get(rel) or labels.get(stem_id) or labels.get(p.stem) or {}
        emotion = label.get("emotion")
        if emotion is None:
            m = _QUADRANT_PREFIX.match(p.name)
            if not m:
                raise DataError(
                    f"{p}: no emotion label (add it to labels.jsonl or labels.csv in {directory}, "
                    "or start the file name with Q1_ .. Q4_)"
                )
            emotion = m.group(1).upper()
        extra = {k: v for k, v in label.items() if k not in ("id", "file", "emotion", "key")}
        specs.append(
            _PieceSpec(
                id=str(label.get("id") or stem_id),
                path=p,
                file=rel,
                emotion=emotion,
                key=label.get("key"),
                extra=extra,
            )
        )
    return specs


def _read_labels(directory: Path) -> dict[str, dict[str, Any]]:
    """``labels.jsonl`` or ``labels.csv`` in ``directory`` -> {file, id or stem: label}, checked."""
    rows: list[tuple[str, dict[str, Any]]] = []  # (where, label)
    jsonl, csv_path = directory / "labels.jsonl", directory / "labels.csv"
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{jsonl}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict) or not (obj.get("file") or obj.get("id")):
                raise DataError(f"{jsonl}:{n}: each line needs a JSON object with 'file' (or 'id')")
            rows.append((f"{jsonl}:{n}", obj))
    elif csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
            if "file" not in cols or "emotion" not in cols:
                raise DataError(f"{csv_path}: needs the columns file,emotion[,key]")
            for n, row in enumerate(reader, start=2):
                label = {"file": row[cols["file"]].strip(), "emotion": row[cols["emotion"]].strip()}
                if "key" in cols and (row.get(cols["key"]) or "").strip():
                    label["key"] = row[cols["key"]].strip()
                rows.append((f"{csv_path}:{n}", label))
    out: dict[str, dict[str, Any]] = {}
    for where, label in rows:
        label = dict(label)
        emotion = str(label.get("emotion", "")).strip().upper()
        if emotion not in cp_vocab.EMOTIONS:
            raise DataError(
                f"{where}: emotion {label.get('emotion')!r} is not one of Q1, Q2, Q3, Q4"
            )
        label["emotion"] = emotion
        if label.get("key"):
            key = cp_vocab.parse_key(str(label["key"]))
            if key is None:
                raise DataError(
                    f"{where}: key {label['key']!r} is not a key like 'C:maj' or 'A:min'"
                )
            label["key"] = key
        else:
            label.pop("key", None)
        for name in (label.get("file"), label.get("id")):
            if name:
                out[str(name)] = label
    return out


# -- preparation -----------------------------------------------------------------------------


def _prepare(
    specs: list[_PieceSpec],
    unusable: list[tuple[str, str]],
    src_dir: Path,
    prepared_dir: Path,
    fingerprint: dict[str, Any],
    log: Callable[[str], None],
    *,
    drums: bool = False,
) -> dict[str, Any]:
    """Tokenise ``specs`` and publish ``prepared_dir`` atomically; returns its meta. ``drums``:
    drum tracks are tokenised as notes (``[data] keep_drums``)."""
    log(
        f"podium: preparing {len(specs)} MIDI files from {src_dir} (once; cached in {prepared_dir})"
    )
    arrays, pieces, skipped = [], [], list(unusable)
    seen: set[str] = set()
    # The bar (or plain lines) of ``podium prepare``, on stderr: podium train shows it too.
    progress = Progress(len(specs), sys.stderr)
    for spec in _counted(specs, progress):
        if spec.id in seen:
            skipped.append((spec.file, f"duplicate piece id {spec.id!r}"))
            continue
        try:
            midi = load_midi(spec.path)
            if drums:
                drums_as_notes(midi)
            key = spec.key or estimate_key(piano_notes(midi))
            tokens = encode_midi(midi, emotion=spec.emotion, key=key)
        except DataError as exc:
            skipped.append((spec.file, str(exc).removeprefix(f"{spec.path}: ")))
            continue
        except Exception as exc:  # one odd file must not end a thousand-file preparation
            skipped.append((spec.file, f"{type(exc).__name__}: {exc}"))
            continue
        if len(tokens) <= 2:
            skipped.append((spec.file, "no notes"))
            continue
        seen.add(spec.id)
        arrays.append(tokens)
        pieces.append(
            {
                "id": spec.id,
                "file": spec.file,
                "emotion": spec.emotion,
                "key": key,
                "key_source": "label" if spec.key else "estimated",
                "n_tokens": len(tokens),
                **spec.extra,
            }
        )
    progress.close()
    total = len(specs) + len(unusable)
    if skipped:
        shown = ", ".join(f"{f} ({why})" for f, why in skipped[:3])
        more = f", and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        log(
            f"podium: warning: skipped {len(skipped)} of {total} MIDI files in {src_dir}: {shown}{more}"
        )
    if not arrays:
        raise DataError(
            f"{src_dir}: none of the {total} MIDI files is usable (see the skipped list above)"
        )

    meta = {
        "fingerprint": fingerprint,
        "source_dir": str(src_dir),
        "n_pieces": len(pieces),
        "n_tokens": int(sum(len(a) for a in arrays)),
        "pieces": pieces,
        "skipped": [{"file": f, "reason": why} for f, why in skipped],
    }
    prepared_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(prepared_dir)
    try:
        cp_vocab.save(tmp / "dictionary.json")
        save_token_pack(tmp, arrays, np.int16)  # every index is < 256; int64 once loaded
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        publish_dir(tmp, prepared_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"podium: prepared {len(pieces)} pieces ({meta['n_tokens']} CP tokens) in {prepared_dir}")
    return meta


def _counted(specs: list[_PieceSpec], progress: Progress) -> Iterator[_PieceSpec]:
    """``specs``, one by one, each counted on ``progress`` once it is done."""
    for spec in specs:
        yield spec
        progress.advance()


def _read_prepared_meta(prepared_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The prepared data's meta if it exists, matches ``fingerprint`` and podium's dictionary."""
    try:
        meta = json.loads((prepared_dir / "meta.json").read_text(encoding="utf-8"))
        if meta.get("fingerprint") != fingerprint:
            return None
        if cp_vocab.load(prepared_dir / "dictionary.json") != cp_vocab.VOCAB:
            return None
        if not (prepared_dir / "tokens.npz").is_file():
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None
