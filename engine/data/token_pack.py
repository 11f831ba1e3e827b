"""The packed token file of a family's own prepared folder (``tokens.npz``): every piece's
tokens concatenated, and the offsets where each starts. One writer and one reader, so every
family's cache is read back with the same checks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from podium.engine.errors import DataError

FILE = "tokens.npz"


def save_token_pack(directory: Path, arrays: Sequence[np.ndarray], dtype: type) -> int:
    """Write ``arrays`` (one per piece, time first) as ``directory/tokens.npz`` in ``dtype``
    (narrow on disk: cp and music_transformer ids fit int16); returns the number of tokens."""
    offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    np.savez(directory / FILE, tokens=np.concatenate(arrays).astype(dtype), offsets=offsets)
    return int(offsets[-1])


def load_token_pack(prepared_dir: Path, n_pieces: int) -> list[np.ndarray]:
    """The pieces of ``prepared_dir/tokens.npz``, widened to int64.

    Raises:
        DataError: the file is unreadable or does not hold ``n_pieces`` pieces (its meta.json
            says how many), naming the folder to delete.
    """
    path = prepared_dir / FILE
    try:
        with np.load(path) as npz:
            tokens, offsets = npz["tokens"].astype(np.int64), npz["offsets"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"{path}: prepared data is unreadable ({exc}); delete {prepared_dir}"
        ) from exc
    if len(offsets) != n_pieces + 1 or offsets[-1] != len(tokens):
        raise DataError(f"{path}: prepared data does not match meta.json; delete {prepared_dir}")
    return [tokens[a:b] for a, b in itertools.pairwise(offsets)]
