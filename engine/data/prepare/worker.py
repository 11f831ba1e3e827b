"""One file through a family's tokeniser, in a worker process: parse, check, encode, store.

Everything a worker returns is small (status, reason, token count, a few labels): the tokens go
to the shard store on disk, so the parent's memory does not grow with the corpus.
"""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pretty_midi

from podium.engine.data.midi_io import drums_as_notes
from podium.engine.data.prepare.shards import ShardStore
from podium.engine.errors import DataError
from podium.engine.families.registry import Tokenizer


@dataclass(frozen=True)
class Task:
    key: str
    file: str
    path: str
    labels: dict[str, str]


@dataclass
class Result:
    key: str
    file: str
    status: str
    """"kept" or "skipped"."""
    reason: str = ""
    n_tokens: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


_STATE: dict[str, Any] = {}


def init_worker(tokenizer: Tokenizer, shard_root: str) -> None:
    """Pool initializer: the tokeniser and the shard store, once per process. SIGINT is left to
    the parent, which lets running files finish (their shards whole) and then stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _STATE["tokenizer"] = tokenizer
    _STATE["store"] = ShardStore(Path(shard_root))


def run_task(task: Task) -> Result:
    """Prepare one file (``init_worker`` must have run in this process)."""
    tokenizer: Tokenizer = _STATE["tokenizer"]
    store: ShardStore = _STATE["store"]
    status, reason, tokens, meta = encode_file(tokenizer, Path(task.path), task.labels)
    if status == "kept":
        store.put_tokens(task.key, tokens, meta)
        return Result(task.key, task.file, "kept", n_tokens=len(tokens), meta=meta)
    store.put_skip(task.key, reason)
    return Result(task.key, task.file, "skipped", reason=reason)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def encode_file(
    tokenizer: Tokenizer, path: Path, labels: dict[str, str]
) -> tuple[str, str, Any, dict[str, Any]]:
    """``(status, reason, tokens, meta)`` for one file; never raises for a bad file.

    The reasons a report groups by are the words before the first colon: unreadable, no notes,
    drums only, too short, too long, unsupported.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tempo events on non-zero tracks are common
            midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido/pretty_midi raise many unrelated types on bad input
        return "skipped", f"unreadable: {_first_line(exc)}", None, {}
    pitched = [i for i in midi.instruments if not i.is_drum and i.notes]
    drums = [i for i in midi.instruments if i.is_drum and i.notes]
    if not pitched and not drums:
        return "skipped", "no notes", None, {}
    if not tokenizer.keep_drums:
        if not pitched:
            return "skipped", "drums only", None, {}
        midi.instruments = [i for i in midi.instruments if not i.is_drum]
    else:  # kept: their notes tokenised like the others' (the encoders leave drum tracks out)
        drums_as_notes(midi)
    try:
        tokens = tokenizer.encode(midi, labels)
    except DataError as exc:
        return "skipped", f"unsupported: {exc}", None, {}
    except Exception as exc:  # one odd file must never end a 176k-file run
        return "skipped", f"unsupported: {type(exc).__name__}: {_first_line(exc)}", None, {}
    n = len(tokens)
    if n < tokenizer.min_tokens:
        return "skipped", f"too short: {n} tokens (< {tokenizer.min_tokens})", None, {}
    if tokenizer.max_tokens is not None and n > tokenizer.max_tokens:
        return "skipped", f"too long: {n} tokens (> {tokenizer.max_tokens})", None, {}
    return "kept", "", tokens, {}
