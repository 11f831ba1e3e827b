"""Token shards on disk, one per (file content, labels, tokeniser): what makes ``prepare``
incremental and safe to interrupt.

A shard's name is a hash of the file's bytes, the labels its tokeniser reads and the tokeniser's
fingerprint, so a re-run finds every piece already done (renamed, moved or not), a changed file
or label is redone, and a changed tokeniser starts a new shard directory. Each shard is written
under a temporary name and renamed into place: after Ctrl-C or a kill, a shard is whole or absent.
A skipped file gets a shard too (``.skip.json``, its reason), so a bad file costs one parse ever.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def content_hash(path: Path) -> str:
    """sha1 of the file's bytes (hex)."""
    h = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """A short name for a tokeniser fingerprint (its shard directory)."""
    blob = json.dumps(fingerprint, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def piece_key(content: str, labels: dict[str, str], fields: tuple[str, ...]) -> str:
    """The shard key: the content hash and the labels the tokeniser reads."""
    used = {f: labels[f] for f in fields if f in labels}
    blob = content + json.dumps(used, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()


class ShardStore:
    """``<root>/<key[:2]>/<key>.npz`` (tokens) or ``.skip.json`` (why not)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _base(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The stored result for ``key``: ``{"status": "kept", "n_tokens", "meta"}`` or
        ``{"status": "skipped", "reason"}``; None when not done (or unreadable: redone)."""
        base = self._base(key)
        skip = base.with_suffix(".skip.json")
        try:
            if skip.is_file():
                return json.loads(skip.read_text(encoding="utf-8"))
            npz = base.with_suffix(".npz")
            if npz.is_file():
                with np.load(npz) as z:
                    meta = json.loads(str(z["meta"]))
                    return {"status": "kept", "n_tokens": int(z["tokens"].shape[0]), "meta": meta}
        except (OSError, ValueError, KeyError):
            return None
        return None

    def tokens(self, key: str) -> np.ndarray:
        with np.load(self._base(key).with_suffix(".npz")) as z:
            return z["tokens"]

    def put_tokens(self, key: str, tokens: np.ndarray, meta: dict[str, Any]) -> None:
        def write(f: Any) -> None:
            np.savez(f, tokens=tokens, meta=np.array(json.dumps(meta, ensure_ascii=False)))

        self._atomic(self._base(key).with_suffix(".npz"), write)

    def put_skip(self, key: str, reason: str) -> None:
        blob = json.dumps({"status": "skipped", "reason": reason}, ensure_ascii=False).encode()
        self._atomic(self._base(key).with_suffix(".skip.json"), lambda f: f.write(blob))

    @staticmethod
    def _atomic(final: Path, write: Any) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
