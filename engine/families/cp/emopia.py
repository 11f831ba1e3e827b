"""EMOPIA's released checkpoints (and compound-word-transformer's) in podium's CP model.

EMOPIA (Hung et al. 2021) and the compound-word transformer (Hsiao et al. 2021) save plain state
dicts (``loss_<N>_params.pt``, keys sometimes prefixed ``module.`` by DataParallel) of a
fast-transformers model, and a ``dictionary.pkl`` of ``(event2word, word2event)`` keyed by field
(``'bar-beat'`` with a dash). Their model is podium's ``CPTransformer`` under other names:

    word_emb_<f>.lut.weight                          embeddings.<i>.weight    (scaled by sqrt(size) in both)
    in_linear                                        in_proj
    pos_emb.pe (1, L, C)                             positions.table          (not saved by podium; checked equal)
    transformer_encoder.layers.N.attention.
        {query,key,value,out}_projection             blocks.N.attn.{query,key,value,out}
    transformer_encoder.layers.N.linear1 / linear2   blocks.N.ffn.fc_in / fc_out
    transformer_encoder.layers.N.norm1 / norm2       blocks.N.ln_attn / ln_ffn   (post-norm in both)
    transformer_encoder.norm                         ln_f
    project_concat_type                              type_proj
    proj_<f>                                         heads.<i>

Their token indices are the dictionary's; podium's are its fixed dictionary's (``vocab``). The
dictionary maps one onto the other by token name, so embedding rows and head rows are permuted
into podium's order; podium tokens the source never had get zero embeddings and a head bias of
``ABSENT_LOGIT`` (never sampled). A source without a key field (EMOPIA's emotion-only models) gets
a key embedding of width 1 holding zeros: the key then changes nothing until fine-tuning
teaches it. The dictionary is read with a restricted unpickler (builtins dict, str, int only).
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as V

if TYPE_CHECKING:  # torch is imported when a checkpoint is converted: the family stays light
    from torch import Tensor

SOURCE_FIELDS = {
    "tempo": "tempo",
    "chord": "chord",
    "bar_beat": "barbeat",
    "type": "type",
    "pitch": "pitch",
    "duration": "duration",
    "velocity": "velocity",
    "emotion": "emotion",
    "key": "key",
}
"""podium field -> the name in ``word_emb_<name>`` / ``proj_<name>``."""
DICT_FIELDS = {"bar_beat": "bar-beat"}
"""podium field -> the dictionary's key where they differ."""
ABSENT_LOGIT = -1e4
"""Head bias of podium tokens the source model has no row for."""
_LAYER = {
    "attention.query_projection": "attn.query",
    "attention.key_projection": "attn.key",
    "attention.value_projection": "attn.value",
    "attention.out_projection": "attn.out",
    "linear1": "ffn.fc_in",
    "linear2": "ffn.fc_out",
    "norm1": "ln_attn",
    "norm2": "ln_ffn",
}
_TOP = {
    "in_linear": "in_proj",
    "transformer_encoder.norm": "ln_f",
    "project_concat_type": "type_proj",
}


# -- the dictionary ---------------------------------------------------------------------------


class _SafeUnpickler(pickle.Unpickler):
    """Builds only plain data; any class (a callable that could run code) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in ("dict", "str", "int"):
            return {"dict": dict, "str": str, "int": int}[name]
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dictionary pickle")


def read_dictionary(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, dict[int, str]]]:
    """``(event2word, word2event)`` of a released ``dictionary.pkl``, read safely.

    Raises:
        DataError: unreadable, not the (event2word, word2event) pair, or a class in the pickle.
    """
    try:
        obj = _SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: not a readable dictionary pickle ({exc})") from None
    if not (
        isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(d, dict) for d in obj)
    ):
        raise DataError(f"{path}: expected a pickle of (event2word, word2event)")
    event2word, word2event = obj
    return event2word, {f: {int(k): str(v) for k, v in d.items()} for f, d in word2event.items()}


def _podium_name(field: str, name: str) -> str | None:
    """podium's token name for a released dictionary's ``name`` in ``field`` (None: none):
    the name itself, or it without its event prefix (``Note_Pitch_60``, ``Emotion_Q1``), or
    with ``:`` for its first ``_`` (chords: ``C_M`` is ``C:M``)."""
    names = V.token_names(field)
    if name in ("0", "CONTI", "None"):
        return names[0]
    tail = name.split("_", 1)[1] if "_" in name else name
    for candidate in (name, tail, name.replace("_", ":", 1), tail.replace("_", ":", 1)):
        if candidate in names:
            return candidate
    return None


def index_maps(
    word2event: Mapping[str, Mapping[int, str]], fields: list[str]
) -> dict[str, list[int]]:
    """Per podium field, for each source index, podium's index of the same token.

    Raises:
        DataError: a field missing from the dictionary, or a token podium has no name for.
    """
    out: dict[str, list[int]] = {}
    for f in fields:
        words = word2event.get(DICT_FIELDS.get(f, f))
        if words is None:
            raise DataError(
                f"dictionary: no field {DICT_FIELDS.get(f, f)!r} (has {', '.join(word2event)})"
            )
        row = []
        for i in range(len(words)):
            name = _podium_name(f, words.get(i, ""))
            if name is None:
                raise DataError(
                    f"dictionary: {DICT_FIELDS.get(f, f)} token {i} {words.get(i)!r} has no podium "
                    f"equivalent (podium's: {', '.join(V.token_names(f)[:6])}, ...)"
                )
            row.append(V.index(f, name))
        if len(set(row)) != len(row):
            raise DataError(f"dictionary: two {f} tokens map to the same podium token")
        out[f] = row
    return out


# -- the adapter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmopiaLayout:
    """What the released state dict says about its model (podium's config is made from it)."""

    d_model: int
    n_layers: int
    d_ff: int
    emb_sizes: dict[str, int]
    vocab_sizes: dict[str, int]
    has_key: bool
    pe_len: int


def strip_module(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys without DataParallel's ``module.`` prefix."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def layout_of(state: Mapping[str, Tensor]) -> EmopiaLayout:
    """The model dimensions of a released state dict (DataError when it is not one)."""
    state = strip_module(state)
    try:
        emb = {f: state[f"word_emb_{s}.lut.weight"] for f, s in SOURCE_FIELDS.items() if f != "key"}
    except KeyError as exc:
        raise DataError(f"not an EMOPIA / CP-transformer state dict (no {exc.args[0]})") from None
    key = state.get("word_emb_key.lut.weight")
    if key is not None:
        emb["key"] = key
    n_layers = 1 + max(
        int(m.group(1))
        for k in state
        if (m := re.match(r"transformer_encoder\.layers\.(\d+)\.", k))
    )
    return EmopiaLayout(
        d_model=state["in_linear.weight"].shape[0],
        n_layers=n_layers,
        d_ff=state["transformer_encoder.layers.0.linear1.weight"].shape[0],
        emb_sizes={f: int(w.shape[1]) for f, w in emb.items()}
        | ({} if key is not None else {"key": 1}),
        vocab_sizes={f: int(w.shape[0]) for f, w in emb.items()},
        has_key=key is not None,
        pe_len=int(state["pos_emb.pe"].shape[-2]) if "pos_emb.pe" in state else 0,
    )


@dataclass(frozen=True)
class EmopiaAdapter:
    """``to_native``: a released state dict -> podium's CPTransformer state dict (and back).

    ``maps`` (from ``index_maps``) permutes token rows into podium's dictionary; empty means
    the source already uses podium's indices (its sizes must then be podium's)."""

    maps: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def with_dictionary(cls, path: Path, state: Mapping[str, Tensor]) -> EmopiaAdapter:
        layout = layout_of(state)
        fields = [f for f in V.FIELDS if f != "key" or layout.has_key]
        return cls(index_maps(read_dictionary(path)[1], fields))

    def _map(self, f: str, n_source: int) -> list[int]:
        m = self.maps.get(f)
        if m is None:
            if n_source != V.vocab_sizes()[f]:
                raise DataError(
                    f"{f}: {n_source} tokens in the checkpoint, podium has {V.vocab_sizes()[f]}; "
                    "pass the checkpoint's dictionary (--dictionary dictionary.pkl)"
                )
            return list(range(n_source))
        if len(m) != n_source:
            raise DataError(f"{f}: the dictionary has {len(m)} tokens, the checkpoint {n_source}")
        return m

    def to_native(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        import torch

        src = strip_module(state)
        layout = layout_of(src)
        sizes = V.vocab_sizes()
        out: dict[str, Tensor] = {}
        used = {"pos_emb.pe"}
        for i, f in enumerate(V.FIELDS):
            s = SOURCE_FIELDS[f]
            if f == "key" and not layout.has_key:
                out[f"embeddings.{i}.weight"] = torch.zeros(sizes[f], 1)
                d = layout.d_model
                out[f"heads.{i}.weight"] = torch.zeros(sizes[f], d)
                out[f"heads.{i}.bias"] = torch.zeros(sizes[f])
                continue
            w = src[f"word_emb_{s}.lut.weight"]
            m = torch.tensor(self._map(f, w.shape[0]))
            emb = torch.zeros(sizes[f], w.shape[1], dtype=w.dtype)
            emb[m] = w
            hw, hb = src[f"proj_{s}.weight"], src[f"proj_{s}.bias"]
            head_w = torch.zeros(sizes[f], hw.shape[1], dtype=hw.dtype)
            head_b = torch.full((sizes[f],), ABSENT_LOGIT, dtype=hb.dtype)
            head_w[m], head_b[m] = hw, hb
            out[f"embeddings.{i}.weight"] = emb
            out[f"heads.{i}.weight"], out[f"heads.{i}.bias"] = head_w, head_b
            used |= {f"word_emb_{s}.lut.weight", f"proj_{s}.weight", f"proj_{s}.bias"}
        for old, new in _TOP.items():
            for p in ("weight", "bias"):
                out[f"{new}.{p}"] = src[f"{old}.{p}"]
                used.add(f"{old}.{p}")
        if not layout.has_key:  # the zero key embedding's column in the input projection
            w = out["in_proj.weight"]
            out["in_proj.weight"] = torch.cat([w, torch.zeros(w.shape[0], 1, dtype=w.dtype)], 1)
        for n in range(layout.n_layers):
            for old, new in _LAYER.items():
                for p in ("weight", "bias"):
                    key = f"transformer_encoder.layers.{n}.{old}.{p}"
                    out[f"blocks.{n}.{new}.{p}"] = src[key]
                    used.add(key)
        extra = sorted(set(src) - used)
        if extra:
            raise DataError(f"unexpected keys in the checkpoint: {', '.join(extra[:5])}")
        return out

    def from_native(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, f in enumerate(V.FIELDS):
            s = SOURCE_FIELDS[f]
            m = self.maps.get(f, list(range(state[f"embeddings.{i}.weight"].shape[0])))
            if f == "key" and self.maps and "key" not in self.maps:
                continue
            out[f"word_emb_{s}.lut.weight"] = state[f"embeddings.{i}.weight"][m]
            out[f"proj_{s}.weight"] = state[f"heads.{i}.weight"][m]
            out[f"proj_{s}.bias"] = state[f"heads.{i}.bias"][m]
        for old, new in _TOP.items():
            for p in ("weight", "bias"):
                out[f"{old}.{p}"] = state[f"{new}.{p}"]
        if self.maps and "key" not in self.maps:  # the source had no key: drop its column
            out["in_linear.weight"] = out["in_linear.weight"][:, :-1]
        n_layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        for n in range(n_layers):
            for old, new in _LAYER.items():
                for p in ("weight", "bias"):
                    out[f"transformer_encoder.layers.{n}.{old}.{p}"] = state[
                        f"blocks.{n}.{new}.{p}"
                    ]
        return out


def check_positions(state: Mapping[str, Tensor], table: Tensor) -> None:
    """The released ``pos_emb.pe`` must be the sinusoidal table podium rebuilds (else the
    model would see other positions than it was trained with)."""
    import torch

    pe = strip_module(state).get("pos_emb.pe")
    if pe is None:
        return
    pe = pe.reshape(-1, pe.shape[-1])
    n = min(len(pe), len(table))
    if pe.shape[-1] != table.shape[-1] or not torch.allclose(pe[:n].float(), table[:n], atol=1e-5):
        raise DataError("pos_emb.pe: not the sinusoidal table podium's model uses")
