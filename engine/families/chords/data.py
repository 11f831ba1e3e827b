"""The chord data: synthetic clips rendered once into the cache, plus real labelled audio.

Synthetic clips (``render``) are kept as ``<cache>/chords/<digest>/{train,val}.npy`` (int16
audio) and ``{train,val}_labels.npy``, the digest being the rendering's settings, so a second
run with the same ``[data]`` renders nothing. They are written in a staging directory and
renamed into place, so a killed render leaves nothing half-made under the final name.

Real audio: ``real_dir`` holds WAV files and a CSV (``file,start,end,label``, seconds, the
label in ``C:maj7/3`` notation). Each row becomes the clips that fit in its span (one padded
clip when it is shorter than a clip); an unreadable file, a bad span or an unknown label is
reported (file, row, why) and the row skipped. They go to validation or training
(``real_split``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from podium.engine.data.cache import cache_dir_for, staging_dir, sweep_stale
from podium.engine.errors import DataError
from podium.engine.families.chords.config import ChordDataConfig
from podium.engine.families.chords.labels import NOTE_NAMES, TYPES, LabelError, parse_label
from podium.engine.families.chords.render import render_split, synth_backend
from podium.engine.families.registry import LogFn

RENDER_VERSION = 1
"""Bumped when rendering changes, so old caches are redone."""
RENDER_FIELDS = (
    "seed",
    "sample_rate",
    "clip_seconds",
    "inversion_prob",
    "snr_db_min",
    "snr_db_max",
    "waveforms",
    "synth",
    "soundfont",
)
"""The ``[data]`` fields that change the rendered audio (sizes only add clips: see below)."""


class ChordClips(Dataset):
    """Clips of one chord each: ``audio`` (samples,) float in [-1, 1] and the three labels."""

    def __init__(self, audio: np.ndarray, labels: np.ndarray, name: str = "") -> None:
        self.audio = audio  # (N, samples) int16, maybe a memory map
        self.labels = labels  # (N, 3) type, root, bass
        self.name = name

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        audio = torch.from_numpy(self.audio[i].astype(np.float32) / 32768.0)
        t, r, b = (int(v) for v in self.labels[i])
        return {"audio": audio, "type": torch.tensor(t), "root": torch.tensor(r),
                "bass": torch.tensor(b)}  # fmt: skip


@dataclass
class ChordBundle:
    """What ``build_data`` returns (the family contract's ``DataBundle``)."""

    train: Dataset
    val: Dataset | None
    model_info: dict[str, Any] = field(default_factory=dict)


def render_dir(cfg: ChordDataConfig) -> Path:
    """Where this rendering lives in the cache (one directory per rendering settings and
    sizes)."""
    settings = {k: getattr(cfg, k) for k in RENDER_FIELDS}
    settings |= {"n_train": cfg.n_train, "n_val": cfg.n_val, "version": RENDER_VERSION}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir_for(cfg.cache_dir) / "chords" / f"render-{digest}"


def _render(cfg: ChordDataConfig, final: Path, log: LogFn) -> None:
    try:
        backend = synth_backend(cfg)
    except ValueError as exc:
        raise DataError(f"data.{exc}") from None
    total = cfg.n_train + cfg.n_val
    log(f"chords: rendering {total:,} clips once into {final} ({backend.note})")
    shown = [0]

    def progress(done: int) -> None:
        tenth = done * 10 // total
        if tenth > shown[0]:
            shown[0] = tenth
            log(f"chords: rendered {done:,}/{total:,} clips [{'#' * tenth}{'.' * (10 - tenth)}]")

    tmp = staging_dir(final)
    try:
        offset = 0
        for split, count in (("train", cfg.n_train), ("val", cfg.n_val)):
            audio, labels = render_split(
                cfg, backend, split, count, lambda d, o=offset: progress(o + d)
            )
            offset += count
            np.save(tmp / f"{split}.npy", audio)
            np.save(tmp / f"{split}_labels.npy", labels)
        meta = {"synth": dataclasses.asdict(backend), "n_train": cfg.n_train, "n_val": cfg.n_val}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if final.exists() and not (final / "meta.json").is_file():
            shutil.rmtree(final, ignore_errors=True)  # a leftover without its meta: not ours
        try:
            tmp.rename(final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent render of the same settings won
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_synthetic(cfg: ChordDataConfig, log: LogFn) -> tuple[ChordClips, ChordClips, dict]:
    """The rendered train and val clips (rendered first if the cache has none)."""
    final = render_dir(cfg)
    sweep_stale(final.parent)
    if not (final / "meta.json").is_file():
        _render(cfg, final, log)
    meta = json.loads((final / "meta.json").read_text(encoding="utf-8"))
    splits = []
    for split in ("train", "val"):
        audio = np.load(final / f"{split}.npy", mmap_mode="r")
        labels = np.load(final / f"{split}_labels.npy")
        splits.append(ChordClips(audio, labels, f"synthetic {split}"))
    return splits[0], splits[1], meta


# -- real recordings --------------------------------------------------------------------------


def read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """A WAV file as mono float64 at ``sample_rate`` (scipy reads it, resample_poly resamples).

    Raises:
        ValueError: the file cannot be read as WAV (scipy's reason).
    """
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    rate, data = wavfile.read(path)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.dtype.kind == "i":
        data = data / float(np.iinfo(data.dtype).max)
    elif data.dtype.kind == "u":
        data = (data.astype(np.float64) - 128.0) / 128.0
    data = data.astype(np.float64)
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate).limit_denominator(1000)
        data = resample_poly(data, ratio.numerator, ratio.denominator)
    return data


@dataclass
class RealClips:
    """Clips cut from real recordings, and what was skipped (file, row, why)."""

    audio: np.ndarray
    labels: np.ndarray
    files: int
    skipped: list[str]


def _column(row: dict[str, str], name: str) -> str:
    for key, value in row.items():
        if key is not None and key.strip().lower() == name:
            return (value or "").strip()
    return ""


def load_real(cfg: ChordDataConfig) -> RealClips:
    """The clips of ``real_dir``'s labelled spans.

    Raises:
        DataError: the folder or its CSV is missing, the CSV lacks a column, or no row is usable.
    """
    folder = Path(cfg.real_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.real_dir: {folder} is not a folder")
    csv_path = Path(cfg.real_csv).expanduser() if cfg.real_csv else folder / "labels.csv"
    if not csv_path.is_absolute() and cfg.real_csv:
        csv_path = folder / csv_path
    if not csv_path.is_file():
        raise DataError(f"data.real_csv: {csv_path} does not exist (file,start,end,label)")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = ("file", "start", "end", "label")
    header = {k.strip().lower() for k in (rows[0] if rows else {}) if k is not None}
    if rows and not set(need) <= header:
        missing = ", ".join(c for c in need if c not in header)
        raise DataError(f"{csv_path}: missing column(s) {missing} (need {', '.join(need)})")
    n = cfg.clip_samples
    clips, labels, skipped = [], [], []
    audio_of: dict[str, np.ndarray | str] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{csv_path.name}:{line}"
        name = _column(row, "file")
        try:
            chord = parse_label(_column(row, "label"))
        except LabelError as exc:
            skipped.append(f"{where}: {exc}")
            continue
        if name not in audio_of:
            try:
                audio_of[name] = read_wav(folder / name, cfg.sample_rate)
            except (OSError, ValueError) as exc:
                audio_of[name] = f"{folder / name}: unreadable ({exc})"
        audio = audio_of[name]
        if isinstance(audio, str):
            skipped.append(f"{where}: {audio}")
            continue
        try:
            start, end = float(_column(row, "start")), float(_column(row, "end"))
        except ValueError:
            skipped.append(f"{where}: start/end must be seconds (got {row})")
            continue
        a, b = round(start * cfg.sample_rate), min(round(end * cfg.sample_rate), len(audio))
        if not 0 <= a < b or b - a < n // 4:
            skipped.append(f"{where}: span {start}-{end} s is empty, reversed or under a 1/4 clip")
            continue
        span = audio[a:b]
        for k in range(max((b - a) // n, 1)):
            piece = span[k * n : (k + 1) * n]
            piece = np.pad(piece, (0, n - len(piece)))  # a short span: one padded clip
            peak = max(float(np.abs(piece).max()), 1e-8)
            clips.append((piece / peak * 0.9 * 32767).astype(np.int16))
            labels.append((chord.type, chord.root, chord.bass))
    files = sum(1 for v in audio_of.values() if not isinstance(v, str))
    if not clips:
        why = f"; first: {skipped[0]}" if skipped else ""
        raise DataError(f"{csv_path}: no usable labelled span ({len(skipped)} skipped{why})")
    return RealClips(np.stack(clips), np.asarray(labels, dtype=np.int64), files, skipped)


def build_datasets(cfg: ChordDataConfig, log: LogFn) -> ChordBundle:
    """Render (once) and load the synthetic clips, and add the real ones when configured."""
    train, val, meta = load_synthetic(cfg, log)
    info: dict[str, Any] = {
        "types": list(TYPES),
        "roots": list(NOTE_NAMES),
        "sample_rate": cfg.sample_rate,
        "clip_samples": cfg.clip_samples,
        "synth": meta["synth"]["name"],
        "n_train": len(train),
        "n_val": len(val),
        "n_real": 0,
    }
    train_set: Dataset = train
    val_set: Dataset = val
    if cfg.real_dir:
        real = load_real(cfg)
        clips = ChordClips(real.audio, real.labels, f"real ({cfg.real_dir})")
        log(
            f"chords: {len(clips)} real clips from {real.files} file(s) in {cfg.real_dir} "
            f"({cfg.real_split}); skipped {len(real.skipped)} row(s)"
        )
        for line in real.skipped[:10]:
            log(f"chords: skipped {line}")
        if len(real.skipped) > 10:
            log(f"chords: ... and {len(real.skipped) - 10} more skipped rows")
        info |= {"n_real": len(clips), "real_skipped": real.skipped[:20]}
        if cfg.real_split == "train":
            train_set = ConcatDataset([train, clips])
        else:
            val_set = ConcatDataset([val, clips])
    return ChordBundle(train_set, val_set, info)
