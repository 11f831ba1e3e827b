"""A blank key is drawn from the keys the training data pairs with the emotion, not from all 24:
a Q1 request given a minor key asks for two moods at once and follows the key."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pretty_midi

from podium.engine.families.cp import FAMILY as CP
from podium.engine.families.cp.config import DataConfig
from podium.engine.families.cp.data import build_datasets
from podium.engine.families.cp.keys import PAIRS, draw_conditioning, mode_keys

SCALE = {"maj": (0, 2, 4, 5, 7, 9, 11), "min": (0, 2, 3, 5, 7, 8, 10)}
TONIC = {"C": 60, "D": 62, "E": 64, "G": 67, "A": 69, "B": 71}
PIECES = [  # Q1 only ever in major keys, Q2 only in minor ones; three of each key
    *[(f"q1_{t}{i}", "Q1", f"{t}:maj") for t in ("C", "G", "D") for i in range(3)],
    *[(f"q2_{t}{i}", "Q2", f"{t}:min") for t in ("A", "E", "B") for i in range(3)],
]


def write_piece(path: Path, key: str) -> None:
    tonic, mode = key.split(":")
    midi = pretty_midi.PrettyMIDI(initial_tempo=100)
    piano = pretty_midi.Instrument(program=0)
    steps = [*SCALE[mode], 12, *reversed(SCALE[mode])]
    for i, step in enumerate(steps):
        piano.notes.append(pretty_midi.Note(80, TONIC[tonic] + step, i * 0.3, i * 0.3 + 0.3))
    midi.instruments.append(piano)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.write(str(path))


def test_a_blank_key_is_drawn_only_from_the_keys_training_pairs_with_the_emotion(tmp_path):
    data = tmp_path / "data"
    rows = ["file,emotion,key"]
    for name, emotion, key in PIECES:
        write_piece(data / f"{name}.mid", key)
        rows.append(f"{name}.mid,{emotion},{key}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    bundle = build_datasets(
        DataConfig(source="midi_dir", path=str(data), cache_dir=str(tmp_path / "cache")),
        log=lambda line: None,
    )
    info = bundle.model_info  # what every checkpoint carries as its data_info
    table = info[PAIRS]
    assert set(table) == {"Q1", "Q2"} and sum(map(sum, map(dict.values, table.values()))) == len(
        bundle.train.pieces
    )  # the training pieces, counted once each (validation pieces are not the model's data)
    assert all(k.endswith(":maj") for k in table["Q1"]) and all(
        k.endswith(":min") for k in table["Q2"]
    )

    draw = CP.sampler.draw  # what generate_from_run calls: the CLI, the socket and the dashboard
    assert draw is not None
    q1 = Counter(draw({"emotion": "Q1", "key": ""}, info, seed)["key"] for seed in range(600))
    assert set(q1) == set(table["Q1"])  # every key Q1 was trained in, and no other
    total = sum(table["Q1"].values())
    for key, n in table["Q1"].items():  # as often as in the training data (binomial, 5 sigma)
        p = n / total
        assert abs(q1[key] / 600 - p) < 5 * (p * (1 - p) / 600) ** 0.5, (key, q1)
    q2 = {draw({"emotion": "Q2", "key": ""}, info, s)["key"] for s in range(200)}
    assert q2 <= set(table["Q2"])

    # Both blank: the pair comes from the table; an emotion the data never had (Q3) is not drawn.
    pairs = {tuple(draw({"emotion": "", "key": ""}, info, s).values()) for s in range(300)}
    assert {e for e, _ in pairs} == {"Q1", "Q2"}
    assert all(k in table[e] for e, k in pairs)
    # A given key picks the emotion it was trained with.
    assert {draw({"emotion": "", "key": "G:maj"}, info, s)["emotion"] for s in range(50)} == {"Q1"}
    # Given values are kept; the same seed draws the same key.
    assert draw({"emotion": "Q1", "key": "A:min"}, info, 3) == {"emotion": "Q1", "key": "A:min"}
    blank = {"emotion": "Q1", "key": ""}
    assert draw(blank, info, 9) == draw(blank, info, 9)


def test_a_checkpoint_without_the_table_draws_a_key_of_the_quadrants_mode():
    old = {"vocab_sizes": {}}  # a checkpoint saved before the pair table
    for emotion, mode in (("Q1", "maj"), ("Q2", "min"), ("Q3", "min"), ("Q4", "maj")):
        blank = {"emotion": emotion, "key": ""}
        keys = {draw_conditioning(blank, old, s)["key"] for s in range(300)}
        assert keys == set(mode_keys(emotion)) and all(k.endswith(mode) for k in keys)
    emotions = {draw_conditioning({}, None, s)["emotion"] for s in range(100)}
    assert emotions == {"Q1", "Q2", "Q3", "Q4"}
