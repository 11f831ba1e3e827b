"""The 216-node emotion thesaurus: 6 base emotions x 6 sub-emotions x 6 nuances.

Every node carries its affect (valence, arousal, dominance, intensity) and the musical
attributes a phrase for it should have (mode, tempo range, dynamics, articulation, note
density, groove), plus the ids of related nodes (the data's augmentation mixes a node with
them). The nodes ship as package data (``thesaurus.json``, written by ``make_thesaurus.py``,
deterministically) and are validated when loaded: a broken file names the node and the field.

No torch here: the sampler's ``check`` and the CLI read the thesaurus before any model exists.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from podium.engine.errors import DataError

BASES = ("joy", "sadness", "anger", "fear", "surprise", "disgust")
NUANCES = ("faint", "mild", "moderate", "marked", "strong", "overwhelming")
SCALES: Mapping[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}
"""Each mode's pitch classes above the tonic; brightest first."""
MODES = tuple(SCALES)
DYNAMICS: Mapping[str, float] = {"pp": 0.2, "p": 0.32, "mp": 0.44, "mf": 0.56, "f": 0.7, "ff": 0.85}
"""Each dynamic marking's base velocity, as a fraction of 127."""
ARTICULATIONS: Mapping[str, float] = {"legato": 0.2, "tenuto": 0.5, "staccato": 1.0, "marcato": 1.5}
"""Each articulation's accent strength (how much louder the strong steps are)."""
NOTE_LENGTH: Mapping[str, float] = {"legato": 1.0, "tenuto": 0.9, "staccato": 0.45, "marcato": 0.7}
"""Each articulation's sounding length, as a fraction of the gap to the next onset."""
GROOVES = ("straight", "swing", "syncopated", "shuffle", "halftime", "driving")
MAX_DENSITY = 4.0
"""Notes per beat at most: a phrase is written on a grid of four steps a beat."""
EMBEDDING = 64
"""Width of a node's emotion embedding (the EmotionRecognizer's output)."""
AFFECT = 32
"""The embedding's first block (affect and tempo/density/dynamics): the DynamicsEngine's input."""


@dataclass(frozen=True)
class Node:
    """One thesaurus entry."""

    id: str
    """``base.sub.nuance``, e.g. ``joy.elation.strong``."""
    index: int
    base: str
    sub: str
    nuance: str
    valence: float
    """-1 (unpleasant) .. 1 (pleasant)."""
    arousal: float
    """0 (calm) .. 1 (excited)."""
    dominance: float
    """-1 (submissive) .. 1 (in control)."""
    intensity: float
    """0 .. 1."""
    mode: str
    tempo_range: tuple[int, int]
    """Beats per minute, low and high."""
    dynamics: str
    articulation: str
    note_density: float
    """Notes per beat (0 .. ``MAX_DENSITY``]."""
    groove: str
    related: tuple[str, ...]

    @property
    def scale(self) -> tuple[int, ...]:
        return SCALES[self.mode]

    @property
    def tempo(self) -> float:
        """The middle of the tempo range."""
        return (self.tempo_range[0] + self.tempo_range[1]) / 2


@dataclass(frozen=True)
class Thesaurus:
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {n.id: n for n in self.nodes})

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id  # type: ignore[attr-defined]

    def get(self, node_id: str) -> Node:
        """The node called ``node_id``; KeyError when there is none."""
        return self._by_id[node_id]  # type: ignore[attr-defined]

    @property
    def subs(self) -> dict[str, tuple[str, ...]]:
        """Each base's sub-emotions, in file order."""
        out: dict[str, list[str]] = {b: [] for b in BASES}
        for n in self.nodes:
            if n.sub not in out[n.base]:
                out[n.base].append(n.sub)
        return {b: tuple(s) for b, s in out.items()}


# -- loading and validation -------------------------------------------------------------------


class ThesaurusError(DataError):
    """The thesaurus file is broken; the message names the node and the field."""


def _number(raw: Any, lo: float, hi: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ValueError(f"expected a number, got {raw!r}")
    if not lo <= raw <= hi:
        raise ValueError(f"must be in [{lo:g}, {hi:g}] (got {raw!r})")
    return float(raw)


def _choice(raw: Any, choices: Sequence[str]) -> str:
    if raw not in choices:
        raise ValueError(f"must be one of {', '.join(choices)} (got {raw!r})")
    return str(raw)


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"expected a non-empty string, got {raw!r}")
    return raw


def _tempo(raw: Any) -> tuple[int, int]:
    ok = isinstance(raw, list) and len(raw) == 2 and all(type(v) is int for v in raw)
    if not ok or not 20 <= raw[0] <= raw[1] <= 300:
        raise ValueError(
            f"expected [low, high] whole bpm with 20 <= low <= high <= 300, got {raw!r}"
        )
    return (raw[0], raw[1])


def _related(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ValueError(f"expected a list of node ids, got {raw!r}")
    return tuple(raw)


_FIELDS: Mapping[str, Any] = {
    "id": _text,
    "base": lambda v: _choice(v, BASES),
    "sub": _text,
    "nuance": lambda v: _choice(v, NUANCES),
    "valence": lambda v: _number(v, -1.0, 1.0),
    "arousal": lambda v: _number(v, 0.0, 1.0),
    "dominance": lambda v: _number(v, -1.0, 1.0),
    "intensity": lambda v: _number(v, 0.0, 1.0),
    "mode": lambda v: _choice(v, MODES),
    "tempo_range": _tempo,
    "dynamics": lambda v: _choice(v, tuple(DYNAMICS)),
    "articulation": lambda v: _choice(v, tuple(ARTICULATIONS)),
    "note_density": lambda v: _number(v, 0.25, MAX_DENSITY),
    "groove": lambda v: _choice(v, GROOVES),
    "related": _related,
}


def parse(data: Any, where: str) -> Thesaurus:
    """Nodes from the JSON document ``data`` (``{"nodes": [...]}``), validated.

    Raises:
        ThesaurusError: naming ``where``, the node (index and id) and the field.
    """
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ThesaurusError(f'{where}: expected an object with a "nodes" list')
    nodes: list[Node] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["nodes"]):
        label = f"{where}: node {i}" + (f" ({raw.get('id')})" if isinstance(raw, dict) else "")
        if not isinstance(raw, dict):
            raise ThesaurusError(f"{label}: expected an object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(_FIELDS))
        if unknown:
            raise ThesaurusError(f"{label}: field {unknown[0]}: unknown field")
        values: dict[str, Any] = {}
        for name, convert in _FIELDS.items():
            if name not in raw:
                raise ThesaurusError(f"{label}: field {name}: missing")
            try:
                values[name] = convert(raw[name])
            except ValueError as exc:
                raise ThesaurusError(f"{label}: field {name}: {exc}") from None
        expected = f"{values['base']}.{values['sub']}.{values['nuance']}"
        if values["id"] != expected:
            raise ThesaurusError(f"{label}: field id: must be base.sub.nuance ({expected})")
        if values["id"] in seen:
            raise ThesaurusError(f"{label}: field id: duplicate")
        seen.add(values["id"])
        nodes.append(Node(index=i, **values))
    ids = {n.id for n in nodes}
    for n in nodes:
        for other in n.related:
            if other not in ids or other == n.id:
                raise ThesaurusError(
                    f"{where}: node {n.index} ({n.id}): field related: {other!r} is not "
                    "another node"
                )
    expected_count = len(BASES) * 6 * len(NUANCES)
    if len(nodes) != expected_count:
        raise ThesaurusError(f"{where}: {len(nodes)} nodes, expected {expected_count}")
    return Thesaurus(tuple(nodes))


def load_file(path: Path) -> Thesaurus:
    """A thesaurus from a JSON file (ThesaurusError when unreadable or broken)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ThesaurusError(f"{path}: cannot read the thesaurus ({exc})") from None
    return parse(data, str(path))


@lru_cache(maxsize=1)
def load() -> Thesaurus:
    """The thesaurus shipped with podium (read and validated once per process)."""
    text = resources.files(__package__).joinpath("thesaurus.json").read_text(encoding="utf-8")
    return parse(json.loads(text), "thesaurus.json")


def node(node_id: str) -> Node:
    """The shipped node called ``node_id`` (KeyError when unknown)."""
    return load().get(node_id)


# -- the node's emotion embedding -------------------------------------------------------------


def embedding(n: Node, affect: tuple[float, float, float, float] | None = None) -> list[float]:
    """The node's 64-wide emotion embedding, every value in [-1, 1] (the Tanh output's range).

    Dims 0..31, the affect block: valence, arousal, dominance, intensity, their sine/cosine
    features at three frequencies, then tempo, density, loudness and accent, each scaled to
    [-1, 1]. Dims 32..63, the identity block: one-hots of base, sub, nuance, mode and groove,
    then legato and short-note flags. ``affect`` overrides (valence, arousal, dominance,
    intensity), for a labelled example whose values differ from its node's.
    """
    v, a, d, i = affect if affect is not None else (n.valence, n.arousal, n.dominance, n.intensity)
    out = [v, 2 * a - 1, d, 2 * i - 1]
    for k in (1, 2, 3):
        for x in (v, a, d, i):
            out += [math.sin(math.pi * k * x / 2), math.cos(math.pi * k * x / 2)]
    out += [
        (n.tempo - 120.0) / 100.0,
        n.note_density / MAX_DENSITY * 2 - 1,
        DYNAMICS[n.dynamics] * 2 - 1,
        ARTICULATIONS[n.articulation] / 1.5 * 2 - 1,
    ]
    sub = (n.index // len(NUANCES)) % 6  # the file lists nodes base-major, then sub, nuance
    out += [1.0 if sub == k else 0.0 for k in range(6)]
    for value, choices in (
        (n.base, BASES),
        (n.nuance, NUANCES),
        (n.mode, MODES),
        (n.groove, GROOVES),
    ):
        out += [1.0 if value == c else 0.0 for c in choices]
    out += [1.0 if n.articulation == "legato" else 0.0, NOTE_LENGTH[n.articulation] < 0.8]
    assert len(out) == EMBEDDING, len(out)
    return [float(x) for x in out]
