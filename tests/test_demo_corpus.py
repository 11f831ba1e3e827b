"""The generated demo corpus: deterministic, labelled, musically consistent with its labels."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from podium.engine.data.demo_corpus import STYLES, PieceLabel, generate_demo_corpus
from podium.engine.families.cp.tokens import decode_tokens, encode_midi
from podium.engine.families.cp.vocab import KEYS, TEMPO_BINS, VELOCITY_BINS

N = 24


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[PieceLabel]]:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    return out, generate_demo_corpus(out, n_pieces=N, seed=7)


def test_same_seed_same_bytes(corpus, tmp_path):
    out, _ = corpus
    again = generate_demo_corpus(tmp_path / "again", n_pieces=N, seed=7)
    assert len(again) == N
    assert _hashes(tmp_path / "again") == _hashes(out)
    generate_demo_corpus(tmp_path / "other", n_pieces=N, seed=8)
    assert _hashes(tmp_path / "other") != _hashes(out)


def test_files_and_labels(corpus):
    out, labels = corpus
    lines = (out / "labels.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [lb.to_json() for lb in labels]
    assert sorted(p.name for p in (out / "midi").iterdir()) == sorted(
        f"{lb.id}.mid" for lb in labels
    )
    assert [lb.emotion for lb in labels].count("Q3") == N // 4
    for lb in labels:
        assert re.fullmatch(r"demo_\d{4}_Q[1-4]", lb.id)
        assert lb.file == f"midi/{lb.id}.mid" and lb.id.endswith(lb.emotion)
        assert lb.key in KEYS and lb.genre in STYLES and lb.tempo in TEMPO_BINS
        positive = lb.emotion in ("Q1", "Q4")
        assert lb.sentiment == ("positive" if positive else "negative")
        assert lb.key.endswith(":maj" if positive else ":min")  # mode follows valence
        tonic, mode = lb.key.split(":")
        assert f"{tonic} {'major' if mode == 'maj' else 'minor'}" in lb.description
        assert f"{lb.tempo} bpm" in lb.description


def test_arousal_shows_in_tempo_loudness_and_density(corpus):
    out, labels = corpus
    stats: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for lb in labels:
        pm = pretty_midi.PrettyMIDI(str(out / lb.file))
        melody = next(i for i in pm.instruments if i.name == "Melody")
        vel = np.mean([n.velocity for i in pm.instruments for n in i.notes])
        high = lb.emotion in ("Q1", "Q2")
        assert (120 <= lb.tempo <= 160) if high else (60 <= lb.tempo <= 88)
        assert pm.get_tempo_changes()[1][0] == pytest.approx(lb.tempo, abs=1e-3)
        stats[high].append((lb.tempo, vel, len(melody.notes)))
    hi, lo = np.array(stats[True]), np.array(stats[False])
    assert hi[:, 1].min() > lo[:, 1].max()  # every energetic piece is louder than every calm one
    assert hi[:, 2].mean() > 1.5 * lo[:, 2].mean()  # and has a busier melody


def test_pieces_sit_on_the_grid_and_round_trip(corpus, tmp_path):
    out, labels = corpus
    for lb in labels[:8]:
        tokens = encode_midi(out / lb.file, emotion=lb.emotion, key=lb.key)
        assert 90 <= len(tokens) <= 320
        decode_tokens(tokens).write(str(tmp_path / "rt.mid"))
        np.testing.assert_array_equal(
            encode_midi(tmp_path / "rt.mid", emotion=lb.emotion, key=lb.key), tokens
        )
        pm = pretty_midi.PrettyMIDI(str(out / lb.file))
        assert {n.velocity for i in pm.instruments for n in i.notes} <= set(VELOCITY_BINS)


def test_melody_uses_the_key(corpus):
    out, labels = corpus
    for lb in labels:
        tonic = KEYS.index(lb.key) % 12
        scale = {0, 2, 4, 5, 7, 9, 11} if lb.key.endswith("maj") else {0, 2, 3, 5, 7, 8, 10, 11}
        pm = pretty_midi.PrettyMIDI(str(out / lb.file))
        melody = next(i for i in pm.instruments if i.name == "Melody")
        assert {(n.pitch - tonic) % 12 for n in melody.notes} <= scale
        assert melody.notes[-1].pitch % 12 == tonic  # ends on the tonic


def test_replaces_an_existing_corpus_atomically(tmp_path):
    out = tmp_path / "c"
    generate_demo_corpus(out, n_pieces=8, seed=0)
    generate_demo_corpus(out, n_pieces=4, seed=0, bars=4)
    assert len(list((out / "midi").iterdir())) == 4
    assert len((out / "labels.jsonl").read_text().splitlines()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp dirs left behind
    with pytest.raises(ValueError, match="bars: must be >= 2"):
        generate_demo_corpus(tmp_path / "d", n_pieces=2, seed=0, bars=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
