"""Reading a ``podium prepare`` output directory, for any family's ``build_data``.

The tokens are memory-mapped, so opening a 176k-piece directory costs its manifest, not its
tokens; ``pieces(split)`` gives each piece's array as a view. A directory made by another
tokeniser (a changed vocabulary, another family) is refused with what to do.

Use::

    data = PreparedData.open(Path(cfg.path), expect=family.prepare(cfg).tokenizer.fingerprint())
    train = data.arrays("train")              # list of (T, ...) arrays
    labels = [p["labels"] for p in data.pieces("train")]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from podium.engine.errors import DataError

PREPARED_FORMAT = 1
MARKER = "prepared.json"


def is_prepared(path: Path) -> bool:
    """Whether ``path`` is a finished ``podium prepare`` output directory."""
    return (path / MARKER).is_file()


@dataclass(frozen=True)
class PreparedData:
    path: Path
    manifest: dict[str, Any]
    tokens: np.ndarray
    """All kept pieces' tokens, concatenated (memory-mapped, read-only)."""
    offsets: np.ndarray
    records: list[dict[str, Any]]
    """Per piece: file, hash, split, n_tokens, labels."""

    @classmethod
    def open(cls, path: Path, *, expect: dict[str, Any] | None = None) -> PreparedData:
        """Open ``path``; with ``expect`` (some of a tokeniser's fingerprint: its vocabulary,
        not its length limits), refuse one whose fingerprint differs in any of them.

        Raises:
            DataError: not a prepared directory, another format or tokeniser, damaged files.
        """
        marker = path / MARKER
        try:
            manifest = json.loads(marker.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(
                f"{path}: not a prepared directory (no {MARKER}); run podium prepare"
            ) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{marker}: unreadable ({exc}); run podium prepare again") from None
        if manifest.get("format") != PREPARED_FORMAT:
            raise DataError(
                f"{marker}: format {manifest.get('format')!r}, this podium reads {PREPARED_FORMAT}; "
                "run podium prepare again"
            )
        made = manifest.get("fingerprint") or {}
        if expect is not None and any(made.get(k) != v for k, v in expect.items()):
            raise DataError(
                f"{path}: prepared by another tokeniser or vocabulary (family "
                f"{manifest.get('family')!r}, profile {manifest.get('profile')!r}); run podium "
                "prepare again with this profile"
            )
        try:
            tokens = np.load(path / manifest["tokens"], mmap_mode="r")
            offsets = np.load(path / manifest["offsets"])
            lines = (path / manifest["pieces"]).read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"{path}: prepared files are damaged ({exc}); run podium prepare again"
            ) from None
        if len(offsets) != len(records) + 1 or int(offsets[-1]) != len(tokens):
            raise DataError(f"{path}: prepared files do not agree; run podium prepare again")
        return cls(path, manifest, tokens, offsets, records)

    @property
    def vocabulary(self) -> dict[str, Any]:
        return json.loads((self.path / "vocab.json").read_text(encoding="utf-8"))

    def indices(self, split: str | None = None) -> list[int]:
        """Piece indices of one split ("train", "val", "test"), or all."""
        return [i for i, r in enumerate(self.records) if split is None or r["split"] == split]

    def pieces(self, split: str | None = None) -> list[dict[str, Any]]:
        return [self.records[i] for i in self.indices(split)]

    def array(self, i: int) -> np.ndarray:
        """Piece ``i``'s tokens (a view of the memory map)."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def arrays(self, split: str | None = None) -> list[np.ndarray]:
        return [self.array(i) for i in self.indices(split)]
