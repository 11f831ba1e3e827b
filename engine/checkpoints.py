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

Damage that a crash cannot cause (a bad disk block, a copy cut short) is caught by a checksum:
SHA-256 over every tensor's bytes and every other value of the state, kept in the ``.pt``'s own
``"saved"`` (so it can never disagree with the bytes it describes, even between the two renames)
and in the ``.json`` (so a dialog can pin a checkpoint's content without reading its weights).
torch.load does not check the zip's CRCs: without this, 4 KB of garbage loads as NaN weights.
Checkpoints from before the checksum load as "unverified". A state whose model weights are not
finite is never saved: it would replace the last good ``latest``/``best``.
"""

from __future__ import annotations

import contextlib
import hashlib
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
Kind = Literal["latest", "best", "epoch", "periodic", "manual"]

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
    keep_every_steps: int = 0
    """Also keep ``periodic-S`` every this many optimizer steps (0 = never): the "save every N
    steps, keep the last 3" policy of step-based recipes, where epochs are long or uneven."""
    keep_last: int = 3
    """How many ``epoch-*`` checkpoints, and separately how many ``periodic-*`` ones, to keep
    (0 = all). ``best``, ``best-<metric>``, ``latest``, manual saves and checkpoints marked keep
    are never removed by retention."""
    best_metrics: tuple[str, ...] = ()
    """Validation metrics of the family (``"accuracy"``) that each keep their own best
    checkpoint, ``best-<metric>``, by the direction the family declares for the metric; ``best``
    stays the lowest validation loss."""

    def __post_init__(self) -> None:
        for name in ("every_epochs", "every_steps", "keep_every_steps", "keep_last"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0 (got {getattr(self, name)})")
        for metric in self.best_metrics:
            if not SAFE_CHECKPOINT.match(metric):
                raise ValueError(f"best_metrics: {metric!r} is not a metric name")
        if len(set(self.best_metrics)) != len(self.best_metrics):
            raise ValueError("best_metrics: a metric is named twice")


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
    checksum: str = ""
    """``state_checksum`` of the weights file ("" for a checkpoint saved before checksums)."""

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


def _feed(h: Any, obj: Any) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            # One tensor at a time on the host: a GPU state is never copied whole.
            flat = t.reshape(-1).contiguous().cpu()
            h.update(memoryview(flat.view(torch.uint8).numpy()))
    elif isinstance(obj, Mapping):
        h.update(b"{")
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode() + b":")
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):  # a tuple may come back a list: the same content
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}={obj!r};".encode())


def state_checksum(state: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes, every other value,
    with the ``"saved"`` record (which holds the checksum) left out.

    Over the tensors, not the file, so it can live inside the file it describes. SHA-256 rather
    than blake2b: with the CPU's SHA extensions it hashes ~2x faster here (see tests)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "saved"})
    return h.hexdigest()


def saved_checksum(state: Mapping[str, Any]) -> str:
    """The checksum a loaded state was saved with ("" for a checkpoint from before checksums)."""
    saved = state.get("saved")
    value = saved.get("checksum") if isinstance(saved, Mapping) else None
    return value if isinstance(value, str) else ""


def nonfinite_weights(state: Mapping[str, Any]) -> list[str]:
    """Names of the model's floating-point tensors holding NaN or inf (one host sync)."""
    import torch

    model = state.get("model")
    if not isinstance(model, Mapping):
        return []
    names = [k for k, v in model.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not names:
        return []
    # A sum is non-finite whenever one element is, and ~40x cheaper than isfinite().all() on a
    # CPU (23 vs 980 ms on the EMOPIA-size model); a sum that merely overflowed is confirmed
    # element-wise below.
    sums = torch.stack([model[k].detach().sum().float() for k in names])
    suspects = [k for k, ok in zip(names, torch.isfinite(sums).tolist(), strict=True) if not ok]
    return [k for k in suspects if not bool(torch.isfinite(model[k]).all())]


class NonFiniteWeights(CheckpointError):
    """A save refused: the weights hold NaN/inf, and the last good checkpoint must survive."""


def load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint's state and check it against its checksum (when it has one).

    Only tensors and plain containers are accepted (no pickled code). Raises CheckpointError
    for a missing, unreadable or damaged file."""
    import torch

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a podium checkpoint (format {FORMAT_VERSION} expected)")
    expected = saved_checksum(state)
    if expected and state_checksum(state) != expected:
        raise CheckpointError(f"{path}: damaged (its content does not match its checksum)")
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
    order = {"manual": 0, "epoch": 1, "periodic": 1, "best": 2, "latest": 3}
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
            "checksum": saved_checksum(state),
        }
    )
    with contextlib.suppress(OSError):  # a read-only run dir: the caller still gets the truth
        write_json_atomic(directory / f"{info.name}.json", asdict(fixed))
    return fixed


@dataclass
class Skipped:
    """A checkpoint a resume passed over, and why."""

    info: CheckpointInfo
    reason: str

    def warning(self) -> str:
        return f"checkpoint {self.info.name} (step {self.info.step}) skipped: {self.reason}"


@dataclass
class Resumable:
    """The newest good checkpoint of a run and the newer ones that were not good."""

    info: CheckpointInfo
    state: dict[str, Any]
    skipped: list[Skipped]

    def warnings(self) -> list[str]:
        """One line per skipped checkpoint, then what the fallback costs; [] when none was."""
        lines = [s.warning() for s in self.skipped]
        newest = max((s.info.step for s in self.skipped), default=self.info.step)
        if newest > self.info.step:
            lines.append(
                f"resuming from checkpoint {self.info.name} (step {self.info.step}) instead: "
                f"steps {self.info.step + 1}-{newest} are lost and will be trained again"
            )
        return lines

    @property
    def verified(self) -> bool:
        return bool(saved_checksum(self.state))


def _why_unloadable(path: Path, info: CheckpointInfo, error: CheckpointError) -> str:
    reason = str(error).removeprefix(f"{path}: ")
    with contextlib.suppress(OSError):
        size = path.stat().st_size
        if info.size and size < info.size:
            return f"truncated ({size:,} of {info.size:,} bytes; {reason})"
    return reason


def newest_good_checkpoint(directory: Path) -> Resumable:
    """The newest complete checkpoint that loads, matches its checksum and has finite weights.

    Tries candidates newest first so that one damaged file (a disk error, not a crash: crashes
    cannot leave partial files) falls back to the one before it; every one passed over is in
    ``skipped`` with its reason, for the caller to tell the user."""
    skipped: list[Skipped] = []
    bad_files: dict[tuple[int, int], str] = {}  # names linked to one file fail together
    for info in reversed(list_checkpoints(directory)):
        path = directory / f"{info.name}.pt"
        try:
            st = path.stat()
            inode = (st.st_dev, st.st_ino)
        except OSError:
            inode = (-1, id(info))
        if inode in bad_files:
            skipped.append(Skipped(info, bad_files[inode]))
            continue
        try:
            state = load_state(path)
        except CheckpointError as exc:
            bad_files[inode] = _why_unloadable(path, info, exc)
            skipped.append(Skipped(info, bad_files[inode]))
            continue
        nonfinite = nonfinite_weights(state)
        if nonfinite:
            bad_files[inode] = f"its weights hold NaN/inf ({nonfinite[0]})"
            skipped.append(Skipped(info, bad_files[inode]))
            continue
        return Resumable(checked_info(directory, info, state), state, skipped)
    if skipped:
        raise CheckpointError(
            f"{directory}: no loadable checkpoint ({skipped[0].warning()})"
            + (f" and {len(skipped) - 1} more" if len(skipped) > 1 else "")
        )
    raise CheckpointError(f"{directory}: the run has no complete checkpoint to resume from")


def newest_checkpoint(directory: Path) -> tuple[CheckpointInfo, dict[str, Any]]:
    """``newest_good_checkpoint`` without the list of what it skipped."""
    found = newest_good_checkpoint(directory)
    return found.info, found.state


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
        best_metrics: Mapping[str, float] | None = None,
    ) -> tuple[list[CheckpointInfo], list[str]]:
        """Serialise ``state`` once and publish it under each name its ``kinds`` call for, and
        as ``best-<metric>`` for each metric in ``best_metrics`` (metric -> its new best value).

        Returns the checkpoints written and the names that retention removed. Raises
        NonFiniteWeights, writing nothing, when the model's weights hold NaN/inf.
        """
        best_metrics = {m: v for m, v in (best_metrics or {}).items() if m in self.cfg.best_metrics}
        names = self._names(
            kinds, step=step, epoch=epoch, val_loss=val_loss, best_metrics=tuple(best_metrics)
        )
        extras = {f"best-{m}": {"metric": m, "value": v} for m, v in best_metrics.items()}
        if not names:
            return [], []
        nonfinite = nonfinite_weights(state)
        if nonfinite:
            more = f" and {len(nonfinite) - 1} more" if len(nonfinite) > 1 else ""
            raise NonFiniteWeights(
                f"checkpoint at step {step} not saved: the weights hold NaN/inf "
                f"({nonfinite[0]}{more}); the last good checkpoint is kept"
            )
        wall = time.time()
        first_name, _first_kind = names[0]
        first = self.directory / f"{first_name}.pt"
        payload = {"format": FORMAT_VERSION, **state}
        checksum = state_checksum(payload)
        saved = {"step": step, "epoch": epoch, "val_loss": val_loss, "wall": wall}
        saved["checksum"] = checksum
        with atomic_path(first) as tmp:
            _save_reporting_os_errors({**payload, "saved": saved}, tmp)
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
                checksum=checksum,
                extra=extras.get(name, {}),
            )
            write_json_atomic(self.directory / f"{name}.json", asdict(info))
            written.append(info)
        _fsync_dir(self.directory)
        return written, self._apply_retention()

    def _names(
        self,
        kinds: tuple[Kind, ...],
        *,
        step: int,
        epoch: float,
        val_loss: float | None,
        best_metrics: tuple[str, ...] = (),
    ) -> list[tuple[str, str]]:
        names: list[tuple[str, str]] = []
        # Named (unique) files first, so the shared bytes live under a name that is never
        # overwritten by the next save; ``latest``/``best`` are links to them.
        if "manual" in kinds:
            names.append((f"step-{step:08d}", "manual"))
        if "epoch" in kinds:  # an epoch end with no validation has no loss to put in its name
            loss = "" if val_loss is None else f"-val-{val_loss:.4f}"
            names.append((f"epoch-{round(epoch):04d}{loss}", "epoch"))
        if "periodic" in kinds:
            names.append((f"periodic-{step:08d}", "periodic"))
        if "best" in kinds and self.cfg.save_best:
            names.append(("best", "best"))
        names += [(f"best-{metric}", "best") for metric in best_metrics]
        if self.cfg.save_latest or not names:
            names.append(("latest", "latest"))
        return names

    def _apply_retention(self) -> list[str]:
        if self.cfg.keep_last <= 0:
            return []
        doomed: list[CheckpointInfo] = []
        infos = list_checkpoints(self.directory)
        for kind in ("epoch", "periodic"):  # each keeps its own last N
            kept = [i for i in infos if i.kind == kind and not i.keep]
            doomed += kept[: max(0, len(kept) - self.cfg.keep_last)]
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
