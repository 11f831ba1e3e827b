"""AMT event tokens and semantic tokens: the grid round trip, the vocabulary layout, the
TF-IDF + k-means clustering and its JSON form (no pickle), labels files and their errors."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest

from podium.engine.errors import DataError
from podium.engine.families.amt.config import DataConfig
from podium.engine.families.amt.data import AMTSequenceDataset, build_datasets, read_labels
from podium.engine.families.amt.semantic import SemanticModel, fit_semantic
from podium.engine.families.amt.tokens import END, START, AMTVocab, decode_tokens, encode_midi

VOCAB = AMTVocab(vocab_size=512, resolution=100, max_semantic=8)


def _midi(notes: list[tuple[int, int, int]], res: int) -> pretty_midi.PrettyMIDI:
    """(onset tick, pitch, duration ticks) notes on a ``res`` ticks/s grid, two instruments."""
    midi = pretty_midi.PrettyMIDI()
    parts = [pretty_midi.Instrument(0), pretty_midi.Instrument(40)]
    for i, (on, pitch, dur) in enumerate(notes):
        parts[i % 2].notes.append(pretty_midi.Note(90, pitch, on / res, (on + dur) / res))
    midi.instruments += parts
    drums = pretty_midi.Instrument(0, is_drum=True)
    drums.notes.append(pretty_midi.Note(100, 36, 0.0, 0.1))  # drums are not read
    midi.instruments.append(drums)
    return midi


def _notes(midi: pretty_midi.PrettyMIDI, res: int) -> list[tuple[int, int, int]]:
    return sorted(
        (round(n.start * res), n.pitch, round((n.end - n.start) * res))
        for i in midi.instruments
        if not i.is_drum
        for n in i.notes
    )


def test_vocabulary_layout_fills_the_profile_size_without_overlap():
    v = VOCAB
    assert (v.semantic_base, v.note_base, v.time_base) == (4, 12, 140)
    assert v.duration_base + v.n_duration == 512 and v.n_time == 186 and v.n_duration == 186
    kinds = [v.kind(t) for t in range(512)]
    assert kinds.count("semantic") == 8 and kinds.count("note") == 128
    assert kinds.count("time") == v.n_time and kinds.count("duration") == v.n_duration


@pytest.mark.parametrize("res", [100, 24])
def test_notes_on_the_grid_round_trip_exactly(res):
    vocab = AMTVocab(vocab_size=512, resolution=res, max_semantic=8)
    rng = np.random.default_rng(res)
    onsets = np.cumsum(rng.integers(0, 60, size=80))
    onsets[40] += 3 * vocab.n_time  # a gap longer than the largest TIME_ON step
    notes = [
        (int(o), int(rng.integers(21, 109)), int(rng.integers(1, vocab.n_duration + 1)))
        for o in onsets
    ]
    tokens = encode_midi(_midi(notes, res), vocab, semantic=5)
    assert tokens[0] == START and tokens[1] == vocab.semantic(5) and tokens[-1] == END
    assert tokens.dtype == np.int64 and tokens.max() < vocab.vocab_size
    assert _notes(decode_tokens(tokens, vocab), res) == sorted(notes)


def test_durations_past_the_largest_step_are_cut_and_zero_length_notes_last_a_tick():
    notes = [(0, 60, 500), (10, 62, 0)]
    tokens = encode_midi(_midi(notes, 100), VOCAB)
    assert _notes(decode_tokens(tokens, VOCAB), 100) == [(0, 60, VOCAB.n_duration), (10, 62, 1)]


def test_decoding_tolerates_any_sequence():
    rng = np.random.default_rng(0)
    junk = rng.integers(0, VOCAB.vocab_size, size=400)
    midi = decode_tokens(junk, VOCAB)
    assert all(n.end > n.start for n in midi.instruments[0].notes)


TEXTS = [
    *(f"a slow sad quiet minor piano ballad number {i}" for i in range(12)),
    *(f"a fast loud happy bright major march number {i}" for i in range(12)),
    *(f"gentle calm flowing arpeggios lullaby number {i}" for i in range(12)),
]


def test_semantic_clusters_pick_k_by_silhouette_and_survive_json():
    model, labels = fit_semantic(TEXTS, min_k=2, max_k=5, seed=0)
    assert model.k == 3 and model.silhouette == max(model.scores.values())
    assert sorted(model.scores) == [2, 3, 4, 5]
    assert len(set(labels[:12])) == len(set(labels[12:24])) == len(set(labels[24:])) == 1
    assert len(set(labels.tolist())) == 3 and sorted(model.sizes) == [12, 12, 12]
    data = json.loads(json.dumps(model.to_dict()))  # plain JSON: nothing is unpickled
    again = SemanticModel.from_dict(data)
    assert again.assign(TEXTS).tolist() == labels.tolist()
    sad, march = again.assign(["a sad slow ballad", "a loud march"]).tolist()
    assert sad == labels[0] and march == labels[12]


def test_fewer_distinct_texts_than_clusters_gives_one_cluster():
    model, labels = fit_semantic(["same words"] * 5, min_k=2, max_k=4)
    assert model.k == 1 and labels.tolist() == [0] * 5


def test_windows_keep_the_semantic_prefix_and_cover_every_token_once():
    piece = np.arange(100, 100 + 23)
    piece[:2] = [START, VOCAB.semantic(3)]
    data = AMTSequenceDataset([piece], seq_len=8)
    targets = []
    for i in range(len(data)):
        item = data[i]
        assert item["x"][0] == START and item["x"][1] == VOCAB.semantic(3)
        targets += item["y"][item["mask"] > 0].tolist()
    body = [t for t in targets if t >= 100]
    assert sorted(body) == piece[2:].tolist()


def test_labels_files_give_texts_and_name_a_bad_row(tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text('file,description\na.mid,"slow, sad"\nb.mid,fast\n', encoding="utf-8")
    assert read_labels(good, "description") == {"a.mid": "slow, sad", "b.mid": "fast"}
    rows = tmp_path / "labels.jsonl"
    rows.write_text('{"file": "a.mid", "text": "x"}\n{"file": "b.mid", "text": " "}\n')
    with pytest.raises(DataError, match=r"labels.jsonl:2: no text in column 'text'"):
        read_labels(rows, "text")
    with pytest.raises(DataError, match=r"needs the columns file,caption"):
        read_labels(good, "caption")


def test_a_midi_folder_with_a_labels_file_is_prepared_once_with_semantic_tokens(tmp_path):
    src = tmp_path / "midi"
    (src / "sub").mkdir(parents=True)
    rows = ["file,description"]
    for i, text in enumerate(TEXTS[::3]):  # 4 of each kind
        name = f"sub/p{i}.mid" if i % 2 else f"p{i}.mid"
        _midi([(0, 60 + i, 20), (25, 64, 20)], 100).write(str(src / name))
        rows.append(f"{name},{text}")
    _midi([(0, 60, 10)], 100).write(str(src / "unlabelled.mid"))
    (src / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = DataConfig(
        source="midi_dir", path=str(src), cache_dir=str(tmp_path / "cache"), seq_len=16,
        max_semantic=4, val_fraction=0.3,
    )  # fmt: skip
    said: list[str] = []
    bundle = build_datasets(cfg, log=said.append)
    assert any("1 MIDI files have no row" in line and "unlabelled.mid" in line for line in said)
    assert bundle.semantic.k == 3
    pieces = [*bundle.train.pieces, *bundle.val.pieces]
    assert len(pieces) == 12
    by_pitch = {int(p[3]) - bundle.vocab.note_base: int(p[1]) for p in pieces}  # first NOTE
    expected = bundle.semantic.assign(TEXTS[::3])
    assert [by_pitch[60 + i] - bundle.vocab.semantic_base for i in range(12)] == expected.tolist()
    info = bundle.model_info
    assert json.loads(json.dumps(info)) == info  # the checkpoint's data info is plain JSON
    said.clear()
    build_datasets(cfg, log=said.append)
    assert not [line for line in said if "preparing" in line]  # cached
    (src / "labels.csv").write_text(rows[0] + "\np0.mid,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels.csv:2: no text in column 'description'"):
        build_datasets(cfg, log=said.append)
