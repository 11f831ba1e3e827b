"""``podium prepare`` with an ``amt`` profile: the events are prepared once, the semantic tokens
are fitted when the prepared directory is read, and training data from it equals, piece for
piece, what the family makes of the same MIDI folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from podium.engine.cli.main import main
from podium.engine.config import load_profile
from podium.engine.data.prepared import PreparedData
from podium.engine.errors import DataError
from podium.engine.families.amt.data import build_datasets
from podium.engine.families.amt.tokens import START
from tests.prepare_corpus import write_piece

PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "amt-gpt2-small.toml"
KINDS = (
    "a slow sad quiet minor piano ballad",
    "a fast loud happy bright major march",
    "gentle calm flowing arpeggios lullaby",
)


def _corpus(src: Path) -> None:
    """12 described pieces, half in ``m/`` (a folder that sorts before the files beside it, so
    a walk and a sort list them in different orders), an undescribed one and a drums-only one."""
    rows = ["file,description"]
    for i in range(12):
        name = f"m/p{i:02d}.mid" if i % 2 else f"p{i:02d}.mid"
        write_piece(src / name, [60 + i, 64, 67, 72 - i % 5, 55 + i], tempo=90.0 + 5 * i)
        rows.append(f'{name},"{KINDS[i % 3]} number {i}"')
    write_piece(src / "undescribed.mid", [60, 62, 64])
    write_piece(src / "drums.mid", [36, 38, 42], drums=True)
    rows.append(f'drums.mid,"{KINDS[0]} drums"')
    (src / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def _by_file(bundle) -> dict[str, np.ndarray]:
    return {
        f: p
        for ds in (bundle.train, bundle.val)
        for f, p in zip(ds.piece_ids, ds.pieces, strict=True)
    }


def test_prepared_amt_data_equals_the_midi_folder_path(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    _corpus(src)
    argv = ["prepare", "midi-folder", str(src), "--profile", str(PROFILE), "--out", str(out)]
    assert main([*argv, "--workers", "1"]) == 0, capsys.readouterr().err
    data = PreparedData.open(out)
    assert data.manifest["family"] == "amt" and len(data.records) == 12
    report = (out / "summary.txt").read_text(encoding="utf-8")
    assert "undescribed.mid: unsupported: no 'description' label" in report
    assert "drums.mid: drums only" in report
    profile = load_profile(PROFILE).data
    kw = {"source": "midi_dir", "seq_len": 32, "cache_dir": str(tmp_path / "cache")}
    from_out = dataclasses.replace(profile, path=str(out), **kw)
    said: list[str] = []
    prepared = build_datasets(from_out, log=said.append)
    assert any("semantic tokens over 12 prepared pieces" in line for line in said)
    folder = build_datasets(dataclasses.replace(from_out, path=str(src)), log=lambda _: None)
    stored = data.array(0)  # events only: the semantic token is not known per file
    assert stored[0] == START and folder.vocab.kind(int(stored[1])) == "time"
    assert prepared.info["source"] == "prepared" and len(prepared.val.pieces) >= 1
    assert prepared.semantic.to_dict() == folder.semantic.to_dict() and folder.semantic.k >= 2
    got, want = _by_file(prepared), _by_file(folder)
    assert sorted(got) == sorted(want) and len(want) == 12
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    semantic = {int(p[1]) - folder.vocab.semantic_base for p in want.values()}
    assert len(semantic) == folder.semantic.k  # the tokens differ between pieces
    assert prepared.model_info == folder.model_info
    said.clear()
    again = build_datasets(from_out, log=said.append)  # the fit is cached, not redone
    assert not said and again.model_info == prepared.model_info

    # The tokens depend on the resolution and the vocabulary: another is refused, not misread.
    for change in ({"resolution": 50}, {"vocab_size": 1024}, {"max_semantic": 4}):
        with pytest.raises(DataError, match="another tokeniser"):
            build_datasets(dataclasses.replace(from_out, **change))
