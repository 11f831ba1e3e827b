"""Checkpoints: atomic files, a retention policy, and the full state an exact resume needs.

Each checkpoint is two files in ``<run>/checkpoints/``: ``NAME.pt`` (torch.save of the state) and
``NAME.json`` (small metadata: step, epoch, validation loss, kind, profile hash). Both are written
to a temporary name in the same directory, fsynced and renamed, and the ``.json`` is written only
after the ``.pt`` is in place, so a checkpoint *counts only if its metadata exists*: a process killed
at any point leaves no partial file under a final name.

A name that is saved again (``latest``, ``best``) can be caught between its two renames: the new
``.pt`` beside the old ``.json``. The ``.pt`` therefore carries its own metadata (``"saved"``),
and whoever loads it (``checked_info``) trusts that over the ``.json`` and repairs the ``.json``;
a resume that believed the stale ``.json`` would cut the metrics one step short of the weights.

A single save is serialised once; the other names it goes by (``latest``, ``best``) are hard links
to the same bytes where the filesystem allows, copies elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from podium.engine.errors import CheckpointError

FORMAT_VERSION = 1
Kind = Literal["latest", "best", "epoch", "manual"]

if TYPE_CHECKING:
    import torch  # imported where a checkpoint is written or read: listing needs no torch


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """The profile's [checkpoint] table: which checkpoints a run keeps."""

    save_latest: bool = True
    """Keep ``latest`` up to date (after each validation, every ``every_steps`` and at stop)."""
    save_best: bool = True
    """Keep ``best``: the checkpoint with the lowest validation loss so far."""
    every_epochs: int = 0
    """Also keep ``epoch-E-val-L`` every this many epochs (0 = never)."""
    every_steps: int = 0
    """Refresh ``latest`` every this many optimizer steps (0 = only at validation and stop);
    bounds the work lost when the process dies."""
    keep_last: int = 3
    """How many ``epoch-*`` checkpoints to keep (0 = all). ``best``, ``latest``, manual saves and
    checkpoints marked keep are never removed by retention."""

    def __post_init__(self) -> None:
        for name in ("every_epochs", "every_steps", "keep_last"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0 (got {getattr(self, name)})")


@dataclass
class CheckpointInfo:
    """The metadata file of one checkpoint."""

    name: str
    step: int
    epoch: float
    wall: float
    kind: str
    val_loss: float | None
    profile_hash: str
    size: int = 0
    keep: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------------
# Atomic files


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success fsync it and rename it into place.

    On any error the temporary file is removed and ``final`` is untouched.
    """
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _link_atomic(source: Path, final: Path) -> None:
    """Give ``source``'s bytes a second name atomically (hard link, else copy)."""
    with atomic_path(final) as tmp:
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, tmp)


class _WriteRecorder:
    """A file-like object that remembers the OSError of a failed write.

    torch.save's zip writer turns a failed write (disk full, quota exceeded) into a generic
    RuntimeError; the caller needs the OSError to tell the user the disk is full.
    """

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _save_reporting_os_errors(obj: Any, path: Path) -> None:
    import torch

    with open(path, "wb", buffering=0) as raw:
        recorder = _WriteRecorder(raw)
        try:
            torch.save(obj, recorder)
        except Exception:
            if recorder.error is not None:
                raise recorder.error from None
            raise


# --------------------------------------------------------------------------------------------
# RNG state


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step can touch, in a form ``torch.load(weights_only=True)`` accepts."""
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    import torch

    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cuda[i], i)


# --------------------------------------------------------------------------------------------
# Loading


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Accept state dicts saved from DataParallel/DDP (``module.``) or torch.compile (``_orig_mod.``)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    return out


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    """Load a checkpoint's state. Only tensors and plain containers are accepted (no pickled code)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a podium checkpoint (format {FORMAT_VERSION} expected)")
    return state


def read_info(meta_path: Path) -> CheckpointInfo | None:
    """The metadata of one checkpoint, or None when it is missing or unreadable."""
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
        return CheckpointInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def list_checkpoints(directory: Path) -> list[CheckpointInfo]:
    """Complete checkpoints (metadata and weights both present), oldest step first."""
    if not directory.is_dir():
        return []
    infos = []
    for meta in directory.glob("*.json"):
        if meta.name.startswith(".tmp-"):
            continue
        info = read_info(meta)
        if info is not None and (directory / f"{info.name}.pt").is_file():
            infos.append(info)
    order = {"manual": 0, "epoch": 1, "best": 2, "latest": 3}
    infos.sort(key=lambda i: (i.step, order.get(i.kind, 0), i.wall))
    return infos


def checked_info(directory: Path, info: CheckpointInfo, state: Mapping[str, Any]) -> CheckpointInfo:
    """``info`` as the loaded ``state`` says it is, repairing a ``.json`` older than its ``.pt``.

    The ``.pt`` is renamed into place before its ``.json``, so after a kill between the two the
    weights are the newer save: its step, epoch and validation loss are the true ones.
    """
    saved = state.get("saved")
    if not isinstance(saved, Mapping):  # a checkpoint from before "saved": the trainer's step
        step = (state.get("train_state") or {}).get("step")
        if not isinstance(step, int) or step == info.step:
            return info
        saved = {"step": step, "epoch": info.epoch, "val_loss": None, "wall": info.wall}
    if saved.get("step") == info.step:
        return info
    path = directory / f"{info.name}.pt"
    fixed = CheckpointInfo(
        **{
            **asdict(info),
            "step": int(saved["step"]),
            "epoch": float(saved.get("epoch", info.epoch)),
            "val_loss": saved.get("val_loss"),
            "wall": float(saved.get("wall", info.wall)),
            "size": path.stat().st_size if path.exists() else info.size,
        }
    )
    with contextlib.suppress(OSError):  # a read-only run dir: the caller still gets the truth
        write_json_atomic(directory / f"{info.name}.json", asdict(fixed))
    return fixed


def newest_checkpoint(directory: Path) -> tuple[CheckpointInfo, dict[str, Any]]:
    """The newest complete checkpoint that loads, with its state.

    Tries candidates newest first so that one damaged file (a disk error, not a crash: crashes
    cannot leave partial files) falls back to the one before it.
    """
    errors = []
    for info in reversed(list_checkpoints(directory)):
        try:
            state = load_state(directory / f"{info.name}.pt")
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        return checked_info(directory, info, state), state
    if errors:
        raise CheckpointError(f"{directory}: no loadable checkpoint ({errors[0]})")
    raise CheckpointError(f"{directory}: the run has no complete checkpoint to resume from")


# --------------------------------------------------------------------------------------------
# Saving with a policy


class Checkpointer:
    """Writes checkpoints for one run according to its ``CheckpointConfig``."""

    def __init__(self, directory: Path, cfg: CheckpointConfig, profile_hash: str) -> None:
        self.directory = directory
        self.cfg = cfg
        self.profile_hash = profile_hash
        directory.mkdir(parents=True, exist_ok=True)
        # Leftovers of a process killed mid-write; safe to remove because only the process
        # holding the run's lock builds a Checkpointer for it.
        for stale in directory.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def save(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: float,
        val_loss: float | None,
        kinds: tuple[Kind, ...],
    ) -> tuple[list[CheckpointInfo], list[str]]:
        """Serialise ``state`` once and publish it under each name its ``kinds`` call for.

        Returns the checkpoints written and the names that retention removed.
        """
        names = self._names(kinds, step=step, epoch=epoch, val_loss=val_loss)
        if not names:
            return [], []
        wall = time.time()
        first_name, _first_kind = names[0]
        first = self.directory / f"{first_name}.pt"
        saved = {"step": step, "epoch": epoch, "val_loss": val_loss, "wall": wall}
        with atomic_path(first) as tmp:
            _save_reporting_os_errors({"format": FORMAT_VERSION, **state, "saved": saved}, tmp)
        size = first.stat().st_size
        written = []
        for name, kind in names:
            path = self.directory / f"{name}.pt"
            if path != first:
                _link_atomic(first, path)
            info = CheckpointInfo(
                name=name,
                step=step,
                epoch=epoch,
                wall=wall,
                kind=kind,
                val_loss=val_loss,
                profile_hash=self.profile_hash,
                size=size,
            )
            write_json_atomic(self.directory / f"{name}.json", asdict(info))
            written.append(info)
        _fsync_dir(self.directory)
        return written, self._apply_retention()

    def _names(
        self, kinds: tuple[Kind, ...], *, step: int, epoch: float, val_loss: float | None
    ) -> list[tuple[str, str]]:
        names: list[tuple[str, str]] = []
        # Named (unique) files first, so the shared bytes live under a name that is never
        # overwritten by the next save; ``latest``/``best`` are links to them.
        if "manual" in kinds:
            names.append((f"step-{step:08d}", "manual"))
        if "epoch" in kinds:
            loss = "nan" if val_loss is None else f"{val_loss:.4f}"
            names.append((f"epoch-{round(epoch):04d}-val-{loss}", "epoch"))
        if "best" in kinds and self.cfg.save_best:
            names.append(("best", "best"))
        if self.cfg.save_latest or not names:
            names.append(("latest", "latest"))
        return names

    def _apply_retention(self) -> list[str]:
        if self.cfg.keep_last <= 0:
            return []
        epochs = [i for i in list_checkpoints(self.directory) if i.kind == "epoch" and not i.keep]
        doomed = epochs[: max(0, len(epochs) - self.cfg.keep_last)]
        for info in doomed:
            self.delete(info.name)
        return [info.name for info in doomed]

    def delete(self, name: str) -> None:
        """Remove a checkpoint: metadata first, so it stops counting before its bytes go."""
        for suffix in (".json", ".pt"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{name}{suffix}").unlink()

    def set_keep(self, name: str, keep: bool) -> None:
        meta = self.directory / f"{name}.json"
        info = read_info(meta)
        if info is None:
            raise CheckpointError(f"{meta}: no such checkpoint")
        info.keep = keep
        write_json_atomic(meta, asdict(info))


SAFE_CHECKPOINT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
