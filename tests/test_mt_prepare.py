"""``podium prepare`` with the Music Transformer's tokeniser: its output builds the same
sequences (event tokens and conditioning tokens) as the family's own MIDI-folder path."""

from __future__ import annotations

import dataclasses
import json

import pytest

from podium.engine.cli.main import main
from podium.engine.config import load_profile
from podium.engine.data.prepared import PreparedData
from podium.engine.errors import DataError
from podium.engine.families.music_transformer.data import DataBundle, build_datasets
from tests.podium_cli import ROOT
from tests.prepare_corpus import A_MINOR, C_MAJOR, write_piece

SMALL = ROOT / "profiles" / "music-transformer-small.toml"
LABELS = [  # file, sentiment, genre: names, the lab's integers, and two the profile lacks
    ("a.mid", "positive", "march"),
    ("b.mid", 0, 2),
    ("sub/c.mid", "1", "alberti"),
    ("d.mid", "negative", "arpeggio"),
    ("e.mid", 7, "march"),  # no sentiment 7: left out
    ("f.mid", "positive", "polka"),  # no such genre: left out
]


def sequences(bundle: DataBundle) -> dict[str, tuple[list[int], list[int]]]:
    """File -> (conditioning tokens, event tokens) over both splits."""
    out = {}
    for ds in (bundle.train, bundle.val):
        for f, prefix, events in zip(ds.files, ds.prefixes, ds.pieces, strict=True):
            out[f] = (prefix.tolist(), events.tolist())
    return out


def test_prepared_output_builds_the_midi_folder_sequences(tmp_path):
    src, out = tmp_path / "midis", tmp_path / "out"
    for k, (file, _, _) in enumerate(LABELS):
        write_piece(src / file, (C_MAJOR if k % 2 else A_MINOR)[: 6 + k], tempo=90.0 + 7 * k)
    write_piece(src / "unlabelled.mid", C_MAJOR)  # no row in the labels file: left out
    (src / "labels.jsonl").write_text(
        "".join(
            json.dumps({"file": f, "emotion": "Q1", "sentiment": s, "genre": g}) + "\n"
            for f, s, g in LABELS
        )
    )
    args = ["--profile", str(SMALL), "--workers", "1", "--set", "data.val_fraction=0.5"]
    assert main(["prepare", "midi-folder", str(src), "--out", str(out), *args]) == 0
    assert PreparedData.open(out).manifest["n_pieces"] == 7  # all kept: labels count later

    data = load_profile(SMALL).data
    cache = str(tmp_path / "cache")
    said: dict[str, list[str]] = {"folder": [], "prepared": []}
    folder = build_datasets(
        dataclasses.replace(data, source="midi_dir", path=str(src), cache_dir=cache),
        log=said["folder"].append,
    )
    prepared = build_datasets(
        dataclasses.replace(data, path=str(out), cache_dir=cache), log=said["prepared"].append
    )
    assert prepared.info["source"] == "prepared" and prepared.val.files and prepared.train.files
    expected = sequences(folder)
    assert sorted(expected) == ["a.mid", "b.mid", "d.mid", "sub/c.mid"]
    assert sequences(prepared) == expected  # same events, same sentiment and genre tokens
    assert expected["b.mid"][0] == [390, 392 + 2]  # negative (0), chorale (2)
    assert prepared.model_info == folder.model_info
    assert prepared.info["labels"] == folder.info["labels"]
    for lines in said.values():
        left_out = [s for s in lines if "left out 3 pieces" in s]
        assert left_out and "e.mid (sentiment)" in left_out[0], lines
        assert "f.mid (genre)" in left_out[0] and "unlabelled.mid" in left_out[0]

    cp_out = tmp_path / "cp-out"  # another family's tokens are refused, not misread
    cp = ["--profile", str(ROOT / "profiles" / "demo.toml"), "--workers", "1"]
    assert main(["prepare", "midi-folder", str(src), "--out", str(cp_out), *cp]) == 0
    with pytest.raises(DataError, match="another tokeniser"):
        build_datasets(dataclasses.replace(data, path=str(cp_out)))
