"""CP datasets: sources, preparation cache, split, windows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from podium.engine.errors import DataError
from podium.engine.families.cp import vocab as V
from podium.engine.families.cp.data import (
    CPSequenceDataset,
    DataConfig,
    build_datasets,
    split_val_ids,
    transpose_tokens,
)
from podium.engine.families.cp.tokens import F, decode_tokens, emotion_token, encode_midi


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def _write_midi(path: Path, pitches: list[int], *, tempo: float = 100.0) -> None:
    """A short piece: the given pitches as 8th notes, one after the other, then a chord."""
    pm = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=tempo)
    inst = pretty_midi.Instrument(program=0)
    eighth = 30.0 / tempo
    for i, p in enumerate(pitches):
        inst.notes.append(
            pretty_midi.Note(velocity=80, pitch=p, start=i * eighth, end=(i + 1) * eighth)
        )
    end = len(pitches) * eighth
    for p in pitches[:3]:
        inst.notes.append(
            pretty_midi.Note(velocity=70, pitch=p - 12, start=end, end=end + 4 * eighth)
        )
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


A_MINOR = [69, 72, 76, 74, 72, 71, 69, 64, 69, 72, 76, 81]
C_MAJOR = [60, 64, 67, 65, 64, 62, 60, 67, 72, 71, 72, 60]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    log = Log()
    bundle = build_datasets(
        DataConfig(n_pieces=24, bars=4, seq_len=64, cache_dir=str(cache)), log=log
    )
    return cache, bundle, log


def test_demo_builds_once_then_reuses(demo):
    cache, bundle, log = demo
    corpus = cache / "demo-v1-n24-s0-b4"
    assert f"podium: generated the demo corpus (24 pieces) in {corpus}" in log
    assert sum("generated" in line for line in log) == 1
    assert bundle.n_pieces == 24 and bundle.vocab_sizes == V.vocab_sizes()
    assert bundle.model_info["vocab_sizes"] == V.vocab_sizes()  # what checkpoints save
    assert bundle.prepared_dir.parent == cache / "prepared"
    names = ("dictionary.json", "tokens.npz", "meta.json")
    assert {p.name for p in bundle.prepared_dir.iterdir()} == set(names)
    assert V.load(bundle.prepared_dir / "dictionary.json") == V.VOCAB
    mtimes = {n: (bundle.prepared_dir / n).stat().st_mtime_ns for n in names}

    log2 = Log()
    again = build_datasets(
        DataConfig(n_pieces=24, bars=4, seq_len=64, cache_dir=str(cache)), log=log2
    )
    assert log2 == []
    assert {n: (again.prepared_dir / n).stat().st_mtime_ns for n in names} == mtimes
    assert again.train.piece_ids == bundle.train.piece_ids
    for a, b in zip(again.train.pieces, bundle.train.pieces, strict=True):
        np.testing.assert_array_equal(a, b)
    # Labels from the corpus travel into the prepared metadata.
    meta = json.loads((bundle.prepared_dir / "meta.json").read_text())
    assert {"genre", "description", "sentiment"} <= set(meta["pieces"][0])
    assert bundle.info["emotions"] == {"Q1": 6, "Q2": 6, "Q3": 6, "Q4": 6}


def test_split_is_deterministic_and_disjoint(demo):
    cache, bundle, _ = demo
    train, val = set(bundle.train.piece_ids), set(bundle.val.piece_ids)
    assert train and val and not train & val
    assert len(train | val) == 24
    ids = sorted(train | val)
    assert set(split_val_ids(ids, 0.1)) == val
    assert set(split_val_ids(list(reversed(ids)), 0.1)) == val  # order does not matter
    # A different seq_len re-windows but keeps the split (and does not re-prepare).
    log = Log()
    other = build_datasets(
        DataConfig(n_pieces=24, bars=4, seq_len=16, cache_dir=str(cache)), log=log
    )
    assert log == [] and set(other.val.piece_ids) == val and len(other.train) > len(bundle.train)
    # Both sides are never empty once there are two pieces.
    assert len(split_val_ids(["a", "b"], 1e-9)) == 1
    assert len(split_val_ids(["a", "b", "c"], 0.999999)) == 2


def test_items_are_shifted_and_masked(demo):
    _, bundle, _ = demo
    item = bundle.train[0]
    assert set(item) == {"x", "y", "mask"}
    assert item["x"].shape == (64, 9) and item["x"].dtype == torch.int64
    assert item["y"].shape == (64, 9) and item["y"].dtype == torch.int64
    assert item["mask"].shape == (64,) and item["mask"].dtype == torch.float32
    w = bundle.train.window(0)
    n = len(w) - 1
    assert torch.equal(item["x"][:n], torch.from_numpy(w[:-1]))
    assert torch.equal(item["y"][:n], torch.from_numpy(w[1:]))
    assert torch.equal(item["x"][1:n], item["y"][: n - 1])  # y is x shifted by one
    assert item["mask"][:n].eq(1).all() and item["mask"][n:].eq(0).all()
    assert item["x"][0, F["type"]] == V.TYPE_EMOTION
    # A whole short piece pads with zeros and ends its targets with EOS.
    short = CPSequenceDataset([bundle.train.pieces[0]], seq_len=400)[0]
    n = int(short["mask"].sum())
    assert n == len(bundle.train.pieces[0]) - 1
    assert short["y"][n - 1, F["type"]] == V.TYPE_EOS
    assert not short["x"][n:].any() and not short["y"][n:].any()


def test_transposing_tokens_moves_notes_chords_and_key_together(tmp_path):
    path = tmp_path / "a.mid"
    _write_midi(path, C_MAJOR)
    tokens = encode_midi(path, emotion="Q1", key="C:maj")
    up = transpose_tokens(tokens, 3)
    assert up is not tokens and transpose_tokens(tokens, 0) is tokens
    assert V.VOCAB.name("key", int(up[0, F["key"]])) == "D#:maj"
    before = sorted(n.pitch for i in decode_tokens(tokens).instruments for n in i.notes)
    after = sorted(n.pitch for i in decode_tokens(up).instruments for n in i.notes)
    assert after == [p + 3 for p in before]
    chords = [V.VOCAB.name("chord", int(c)) for c in tokens[:, F["chord"]] if c >= 2]
    moved = [V.VOCAB.name("chord", int(c)) for c in up[:, F["chord"]] if c >= 2]
    assert chords and [c.split(":")[1] for c in moved] == [c.split(":")[1] for c in chords]
    assert all(
        V.PITCH_CLASSES.index(m.split(":")[0]) == (V.PITCH_CLASSES.index(c.split(":")[0]) + 3) % 12
        for c, m in zip(chords, moved, strict=True)
        if c != "Other"
    )
    np.testing.assert_array_equal(transpose_tokens(up, -3), tokens)  # and back
    # The other fields do not move; CONTI stays CONTI.
    same = [F[f] for f in ("tempo", "bar_beat", "type", "duration", "velocity", "emotion")]
    np.testing.assert_array_equal(up[:, same], tokens[:, same])
    assert ((up[:, F["pitch"]] == 0) == (tokens[:, F["pitch"]] == 0)).all()


def test_transposition_is_drawn_per_epoch_reproducibly_and_in_range(demo):
    _, bundle, _ = demo
    ds = CPSequenceDataset(bundle.train.pieces, 64, transpose=5)
    ds.set_epoch(0, seed=7)
    first = [ds.shift_for(i) for i in range(len(ds))]
    again = CPSequenceDataset(bundle.train.pieces, 64, transpose=5)
    again.set_epoch(0, seed=7)  # a resumed run: same draws
    assert [again.shift_for(i) for i in range(len(ds))] == first
    assert torch.equal(again[3]["x"], ds[3]["x"])
    ds.set_epoch(1, seed=7)
    second = [ds.shift_for(i) for i in range(len(ds))]
    assert first != second and len(set(first + second)) > 4
    assert all(-5 <= s <= 5 for s in first + second)
    i = next(i for i, s in enumerate(second) if s)
    item = ds[i]
    plain = torch.from_numpy(ds.window(i))
    n = len(plain) - 1
    notes = plain[:n, F["pitch"]] > 0
    assert torch.equal(item["x"][:n, F["pitch"]][notes], plain[:n, F["pitch"]][notes] + second[i])
    # A piece at the top of the range only goes down.
    top = np.zeros((3, 9), dtype=np.int64)
    top[1:, F["type"]] = V.TYPE_NOTE
    top[1:, F["pitch"]] = V.pitch_index(V.PITCH_MAX - 1)
    edge = CPSequenceDataset([top], 8, transpose=5)
    edge.set_epoch(0)
    for epoch in range(10):
        edge.set_epoch(epoch)
        assert edge.shift_for(0) <= 1
    # Off: nothing moves, and validation sets are built without it.
    assert CPSequenceDataset(bundle.train.pieces, 64).shift_for(0) == 0
    assert bundle.val.transpose == 0


def test_windows_keep_the_emotion_token():
    head = emotion_token("Q3", "D:min")
    body = np.zeros((24, 9), dtype=np.int64)
    body[:, F["type"]] = V.TYPE_NOTE
    body[:, F["pitch"]] = np.arange(1, 25)  # distinct, so order is checkable
    piece = np.concatenate([head[None], body])  # 25 tokens
    ds = CPSequenceDataset([piece], seq_len=8)
    assert len(ds) == 3  # targets 1..8, 9..16, 17..24
    targets = []
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["x"][0], torch.from_numpy(head))
        targets.append(item["y"][item["mask"].bool()])
    np.testing.assert_array_equal(torch.cat(targets).numpy(), piece[1:])
    # 26 tokens: a fourth window with the emotion token and one target.
    ds = CPSequenceDataset([np.concatenate([piece, piece[1:2]])], seq_len=8)
    assert len(ds) == 4 and ds[3]["mask"].sum() == 1


def test_emopia_layout_skips_corrupt_files(tmp_path):
    root = tmp_path / "EMOPIA_1.0"
    _write_midi(root / "midis" / "Q1_abc_0.mid", C_MAJOR)
    _write_midi(root / "midis" / "Q2_abc_1.mid", A_MINOR, tempo=150)
    _write_midi(root / "midis" / "Q3_xyz_0.mid", A_MINOR, tempo=70)
    _write_midi(root / "midis" / "Q4_xyz_1.mid", C_MAJOR, tempo=70)
    (root / "midis" / "Q1_bad_0.mid").write_bytes(b"not a midi file")
    (root / "key_mode_tempo.csv").write_text(
        ",name,keyname,keymode,tempo\n0,Q1_abc_0,F,1,100\n1,Q2_abc_1,e,2,150\n"
    )
    log = Log()
    bundle = build_datasets(
        DataConfig(source="emopia", path=str(root), cache_dir=str(tmp_path / "cache")), log=log
    )
    assert bundle.n_pieces == 4
    warning = next(line for line in log if "skipped" in line)
    assert "skipped 1 of 5" in warning and "Q1_bad_0.mid" in warning
    assert bundle.info["n_skipped"] == 1
    meta = json.loads((bundle.prepared_dir / "meta.json").read_text())
    keys = {p["id"]: (p["emotion"], p["key"], p["key_source"]) for p in meta["pieces"]}
    assert keys["Q1_abc_0"] == ("Q1", "F:maj", "label")
    assert keys["Q2_abc_1"] == ("Q2", "E:min", "label")
    assert keys["Q3_xyz_0"] == ("Q3", "A:min", "estimated")  # Krumhansl-Schmuckler
    assert keys["Q4_xyz_1"] == ("Q4", "C:maj", "estimated")
    all_pieces = bundle.train.pieces + bundle.val.pieces
    assert len(all_pieces) == 4 and len(bundle.val) >= 1
    for p in all_pieces:
        assert p[0, F["type"]] == V.TYPE_EMOTION and p[-1, F["type"]] == V.TYPE_EOS

    # Unchanged files: re-used silently. A new file changes the fingerprint: prepared again.
    quiet = Log()
    build_datasets(
        DataConfig(source="emopia", path=str(root), cache_dir=str(tmp_path / "cache")), log=quiet
    )
    assert quiet == []
    _write_midi(root / "midis" / "Q4_new_0.mid", C_MAJOR)
    again = build_datasets(
        DataConfig(source="emopia", path=str(root), cache_dir=str(tmp_path / "cache")), log=quiet
    )
    assert again.n_pieces == 5 and any("preparing" in line for line in quiet)


def test_empty_or_missing_directories_are_data_errors(tmp_path):
    (tmp_path / "empty" / "midis").mkdir(parents=True)
    cache = str(tmp_path / "cache")
    with pytest.raises(DataError, match=r"no \.mid/\.midi files"):
        build_datasets(
            DataConfig(source="emopia", path=str(tmp_path / "empty"), cache_dir=cache), log=Log()
        )
    with pytest.raises(DataError, match="no such dataset directory"):
        build_datasets(
            DataConfig(source="midi_dir", path=str(tmp_path / "nope"), cache_dir=cache), log=Log()
        )
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "Q1_a.mid").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="none of the 1 MIDI files is usable"):
        build_datasets(
            DataConfig(source="midi_dir", path=str(tmp_path / "junk"), cache_dir=cache), log=Log()
        )


def test_midi_dir_labels(tmp_path):
    root = tmp_path / "songs"
    _write_midi(root / "a.mid", C_MAJOR)
    _write_midi(root / "sub" / "b.midi", A_MINOR)
    _write_midi(root / "Q2_c.mid", A_MINOR)
    (root / "labels.csv").write_text("file,emotion,key\na.mid,Q4,G:maj\nsub/b.midi,q3,\n")
    cache = str(tmp_path / "cache")
    bundle = build_datasets(
        DataConfig(source="midi_dir", path=str(root), cache_dir=cache), log=Log()
    )
    meta = json.loads((bundle.prepared_dir / "meta.json").read_text())
    got = {p["file"]: (p["emotion"], p["key"]) for p in meta["pieces"]}
    assert got == {
        "a.mid": ("Q4", "G:maj"),
        "sub/b.midi": ("Q3", "A:min"),
        "Q2_c.mid": ("Q2", "A:min"),
    }

    _write_midi(root / "d.mid", C_MAJOR)  # no label, no prefix
    with pytest.raises(DataError, match=r"d\.mid: no emotion label"):
        build_datasets(DataConfig(source="midi_dir", path=str(root), cache_dir=cache), log=Log())
    os.remove(root / "d.mid")
    (root / "labels.csv").write_text("file,emotion\na.mid,happy\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: emotion 'happy'"):
        build_datasets(DataConfig(source="midi_dir", path=str(root), cache_dir=cache), log=Log())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"source": "emopia"}, "path"),
        ({"n_pieces": 1}, "n_pieces"),
        ({"bars": 1}, "bars"),
        ({"seq_len": 2}, "seq_len"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"corpus_seed": -1}, "corpus_seed"),
        ({"source": "wav"}, "source"),
        ({"transpose": 12}, "transpose"),
        ({"transpose": -1}, "transpose"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        DataConfig(**kwargs)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    from podium.engine.families.cp.data import cache_root

    monkeypatch.setenv("PODIUM_CACHE", str(tmp_path / "p"))
    assert cache_root(DataConfig()) == tmp_path / "p"
    assert cache_root(DataConfig(cache_dir=str(tmp_path / "c"))) == tmp_path / "c"
    monkeypatch.delenv("PODIUM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root(DataConfig()) == tmp_path / "x" / "podium"
