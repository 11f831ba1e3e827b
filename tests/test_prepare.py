"""``podium prepare``: hard files, the report, incremental re-runs, splits, labels, progress, and
training from the output."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from podium.engine.data.prepare import prepare
from podium.engine.data.prepare.labels import read_labels
from podium.engine.data.prepare.progress import Progress
from podium.engine.data.prepared import PreparedData
from podium.engine.errors import DataError
from podium.engine.families.cp.data import DataConfig, build_datasets
from podium.engine.families.cp.prepare import CPTokenizer
from podium.engine.families.cp.tokens import F
from podium.engine.families.registry import PrepareSpec
from tests.prepare_corpus import (
    A_MINOR,
    C_MAJOR,
    HARD_CASES,
    MAX_TOKENS,
    MIN_TOKENS,
    write_hard_cases,
    write_piece,
)

SPEC = PrepareSpec(
    tokenizer=CPTokenizer(min_tokens=MIN_TOKENS, max_tokens=MAX_TOKENS), val_fraction=0.25
)


def _prepare(src: Path, out: Path, **kw):
    return prepare("midi-folder", src, out, SPEC, family="cp", profile="test", **kw)


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """The hard cases prepared once with two workers."""
    root = tmp_path_factory.mktemp("hard")
    src, out = root / "src", root / "out"
    write_hard_cases(src)
    stream = io.StringIO()
    report = _prepare(src, out, workers=2, stream=stream)
    return src, out, report, stream.getvalue()


def test_every_hard_case_is_reported_and_one_bad_file_aborts_nothing(hard):
    _, out, report, _ = hard
    skipped = {s["file"]: s["reason"] for s in report.skipped}
    for name, kind in HARD_CASES.items():
        if kind == "kept":
            assert name not in skipped, skipped.get(name)
        else:
            assert skipped[name].split(":")[0] == kind, (name, skipped[name])
    assert report.files_read == len(HARD_CASES) + 1  # good.mid too
    kept = {p["file"] for p in PreparedData.open(out).records}
    assert kept == {"good.mid", *(n for n, k in HARD_CASES.items() if k == "kept")}
    assert (
        report.pieces_kept == len(kept) and report.encoded == report.files_read - 1
    )  # empty: no work

    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk["n_skipped"] == len(skipped) and on_disk["pieces_kept"] == len(kept)
    assert on_disk["skipped_by_reason"]["unreadable"] == 2
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    for name, reason in skipped.items():
        assert f"{name}: {reason}" in summary
    assert "Ünïcødé 曲 ピアノ.mid" in (
        out / f"pieces-{json.loads((out / 'prepared.json').read_text())['generation']}.jsonl"
    ).read_text(encoding="utf-8")


def test_labels_reach_the_tokens_and_the_pieces(hard):
    _, out, _, _ = hard
    data = PreparedData.open(out, expect=SPEC.tokenizer.fingerprint())
    for i, rec in enumerate(data.records):
        first = data.array(i)[0]
        assert first[F["emotion"]] == int(rec["labels"]["emotion"][1])  # Q3 -> index 3
        assert rec["labels"]["genre"] == "test" and rec["labels"]["description"].startswith("case")
    assert data.tokens.dtype == np.int16 and data.tokens.shape[1] == 9


def test_rerun_costs_only_new_files_and_keeps_splits(hard, tmp_path):
    src, out, _, _ = hard
    before = {r["file"]: r["split"] for r in PreparedData.open(out).records}
    again = _prepare(src, out, workers=1, stream=io.StringIO())
    assert again.encoded == 0 and again.reused == again.files_read - 1
    write_piece(src / "new" / "one.mid", C_MAJOR, tempo=90)
    write_piece(src / "new" / "two.mid", A_MINOR, tempo=130)
    with (src / "labels.csv").open("a", encoding="utf-8") as f:
        f.write("new/one.mid,Q2,,\nnew/two.mid,Q4,,\n")
    grown = _prepare(src, out, workers=1, stream=io.StringIO())
    assert grown.encoded == 2 and grown.pieces_kept == again.pieces_kept + 2
    after = {r["file"]: r["split"] for r in PreparedData.open(out).records}
    assert {f: after[f] for f in before} == before
    # Only the newest generation of the big files is left.
    assert len(list(out.glob("tokens-*.npy"))) == 1


def test_split_follows_the_content_hash(tmp_path):
    src = tmp_path / "src"
    for k in range(40):
        write_piece(src / f"Q{1 + k % 4}_p{k:02d}.mid", [60 + k % 12, 64, 67, 72 - k % 5])
    spec = PrepareSpec(tokenizer=CPTokenizer(), val_fraction=0.2, test_fraction=0.2)
    a = prepare(
        "midi-folder",
        src,
        tmp_path / "a",
        spec,
        family="cp",
        profile="t",
        workers=1,
        stream=io.StringIO(),
    )
    for p in src.iterdir():  # renamed files: same bytes, same split
        p.rename(
            p.with_name("renamed_" + p.name[3:]).with_name(p.name[:3] + "renamed_" + p.name[3:])
        )
    b = prepare(
        "midi-folder",
        src,
        tmp_path / "b",
        spec,
        family="cp",
        profile="t",
        workers=1,
        stream=io.StringIO(),
    )
    by_hash = lambda out: {r["hash"]: r["split"] for r in PreparedData.open(out).records}  # noqa: E731
    assert by_hash(tmp_path / "a") == by_hash(tmp_path / "b")
    assert a.splits == b.splits and all(a.splits[s] > 0 for s in ("train", "val", "test"))


def test_labels_files_and_unlabelled_pieces(tmp_path):
    src = tmp_path / "src"
    write_piece(src / "a.mid", C_MAJOR)
    write_piece(src / "b.mid", A_MINOR)
    write_piece(src / "c.mid", C_MAJOR, tempo=140)
    labels = tmp_path / "lab.jsonl"
    labels.write_text(
        '{"file": "a.mid", "emotion": "q1", "key": "G:maj"}\n{"file": "b", "quadrant": "Q3"}\n'
        '{"file": "c.mid", "sentiment": "positive"}\n',
        encoding="utf-8",
    )
    assert read_labels(labels)["b"] == {"emotion": "Q3"}
    report = _prepare(src, tmp_path / "out", workers=1, labels_file=labels, stream=io.StringIO())
    assert report.pieces_kept == 2
    assert report.skipped == [{"file": "c.mid", "reason": report.skipped[0]["reason"]}]
    assert report.skipped[0]["reason"].startswith("unsupported: no emotion label")
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion\nQ1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:2: each row needs a 'file'"):
        _prepare(src, tmp_path / "out2", labels_file=bad, stream=io.StringIO())


def test_progress_bar_on_a_terminal_lines_otherwise(hard):
    _, _, _, plain = hard
    assert plain.startswith("podium: prepare: ") and "files/s" in plain and "\r" not in plain
    tty = io.StringIO()
    p = Progress(3, tty, tty=True)
    for _ in range(3):
        p.advance()
    p.close()
    assert "\rpodium: prepare [" in tty.getvalue() and "3/3 files" in tty.getvalue()
    assert "ETA" in tty.getvalue()


def test_cp_trains_from_prepared_output(hard):
    _, out, _, _ = hard
    manifest = PreparedData.open(out).manifest  # the re-run test may have grown it
    bundle = build_datasets(DataConfig(source="midi_dir", path=str(out), seq_len=32))
    assert bundle.n_pieces == manifest["n_pieces"]
    assert len(bundle.val.pieces) == manifest["splits"]["val"] >= 1
    assert bundle.info["source"] == "prepared" and bundle.emotion_keys
    item = bundle.train[0]
    assert item["x"].shape == (32, 9)
    with pytest.raises(DataError, match="another tokeniser"):
        PreparedData.open(out, expect=CPTokenizer().fingerprint())  # other limits


def test_ctrl_c_leaves_a_consistent_state_and_the_rerun_continues(tmp_path):
    """A real SIGINT to a real ``podium prepare`` with two workers, mid-run."""
    src, out = tmp_path / "src", tmp_path / "out"
    for k in range(120):
        write_piece(src / f"Q{1 + k % 4}_{k:03d}.mid", [60, 64, 67, 72], tempo=40.0 + k)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podium",
            "prepare",
            "midi-folder",
            str(src),
            "--profile",
            str(repo / "profiles" / "demo.toml"),
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(list(out.glob("shards/*/*/*.npz"))) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = len(list(out.glob("shards/*/*/*.npz")))
    assert 10 <= done < 120
    assert not (out / "prepared.json").exists()  # never finished: nothing claims to be
    assert not list(out.rglob("*.tmp"))  # every shard is whole or absent
    spec = PrepareSpec(tokenizer=CPTokenizer(), val_fraction=0.1)
    report = prepare(
        "midi-folder", src, out, spec, family="cp", profile="demo", workers=1, stream=io.StringIO()
    )
    assert report.reused == done and report.encoded == 120 - done and report.pieces_kept == 120


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from podium.engine.cli.main import main

    demo = str(Path(__file__).resolve().parents[1] / "profiles" / "demo.toml")
    assert main(["prepare", "midi-folder", str(tmp_path / "nope"), "--profile", demo]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: no such dataset directory" in err
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "emopia", str(tmp_path / "empty"), "--profile", demo]) == 2
    assert "no .mid/.midi files found" in capsys.readouterr().err


def test_emopia_layout_quadrant_from_the_name_key_from_the_csv(tmp_path):
    from podium.engine.families.cp import vocab as V

    root = tmp_path / "EMOPIA_1.0"
    write_piece(root / "midis" / "Q1_abc_0.mid", C_MAJOR)
    write_piece(root / "midis" / "Q3_xyz_1.mid", A_MINOR, tempo=70)
    write_piece(root / "midis" / "notes.mid", C_MAJOR)
    (root / "key_mode_tempo.csv").write_text(
        ",name,keyname,keymode,tempo\n0,Q1_abc_0,F,1,100\n", encoding="utf-8"
    )
    spec = PrepareSpec(tokenizer=CPTokenizer(), val_fraction=0.5)
    report = prepare(
        "emopia",
        root,
        tmp_path / "out",
        spec,
        family="cp",
        profile="t",
        workers=1,
        stream=io.StringIO(),
    )
    assert report.skipped == [
        {"file": "notes.mid", "reason": "unsupported: no Q1_ .. Q4_ prefix in the file name"}
    ]
    data = PreparedData.open(tmp_path / "out")
    heads = {r["file"]: data.array(i)[0] for i, r in enumerate(data.records)}
    assert V.VOCAB.names["emotion"][heads["Q1_abc_0.mid"][F["emotion"]]] == "Q1"
    assert V.VOCAB.names["key"][heads["Q1_abc_0.mid"][F["key"]]] == "F:maj"  # from the CSV
    assert V.VOCAB.names["key"][heads["Q3_xyz_1.mid"][F["key"]]] == "A:min"  # estimated


def test_a_profile_that_keeps_drums_tokenises_them_as_notes(tmp_path):
    """``[data] keep_drums``: a drums-only file is kept, drum notes are notes; the same profile's
    own folder path (podium train on the folder) gives the same tokens as podium prepare."""
    from podium.engine.families.cp import FAMILY

    src = tmp_path / "src"
    write_piece(src / "Q1_beat.mid", [36, 38, 42, 36, 38, 42], drums=True)
    write_piece(src / "Q2_tune.mid", C_MAJOR)
    cfg = DataConfig(source="midi_dir", path=str(src), val_fraction=0.1, keep_drums=True)
    spec = FAMILY.prepare(cfg)
    assert spec.tokenizer.keep_drums
    out = tmp_path / "out"
    report = prepare("midi-folder", src, out, spec, family="cp", profile="t", workers=1,
                     stream=io.StringIO())  # fmt: skip
    assert report.skipped == [] and report.pieces_kept == 2
    data = PreparedData.open(out)
    beat = next(i for i, r in enumerate(data.records) if r["file"] == "Q1_beat.mid")
    pitches = {int(p) for p in data.array(beat)[:, F["pitch"]] if p > 0}
    assert len(pitches) >= 2  # the kick, snare and hat keys are pitches now
    dropped = prepare("midi-folder", src, tmp_path / "out2", FAMILY.prepare(
        DataConfig(source="midi_dir", path=str(src), val_fraction=0.1)), family="cp",
        profile="t", workers=1, stream=io.StringIO())  # fmt: skip
    assert [s["reason"] for s in dropped.skipped] == ["drums only"]
    # The folder path of podium train, with the same setting, makes the same tokens.
    bundle = build_datasets(cfg, log=lambda _line: None)
    pieces = [*bundle.train.pieces, *bundle.val.pieces]
    assert len(pieces) == 2
    assert any(np.array_equal(p, data.array(beat).astype(p.dtype)) for p in pieces)
