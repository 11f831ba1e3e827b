"""A tiny run of profiles/chord-recognition.toml, trained once by ``podium train --headless``
and read by everything after it: the metrics in the store and ``podium metrics --json``, the
``--history`` file, ``podium predict`` on a WAV, and the dashboard's heatmap (``m``), in Pilot
and in a real 80x24 terminal (tmux)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from podium.engine.cli.main import main
from podium.engine.families.chords.config import ChordDataConfig
from podium.engine.families.chords.labels import TYPES
from podium.engine.families.chords.render import render_clip, synth_backend
from podium.engine.runs import RunDir
from podium.tui.app import PodiumApp
from podium.tui.screens.matrix import MatrixScreen
from podium.tui.screens.run import RunScreen
from podium.tui.widgets.heatmap import Heatmap
from tests.test_tui_terminal import TMUX, Tmux, poll
from tests.tui_helpers import ROOT, sync, wait_for

PROFILE = ROOT / "profiles" / "chord-recognition.toml"
TINY = [
    "data.n_train=64",
    "data.n_val=32",
    "data.clip_seconds=0.5",
    "model.channels=4",
    "model.d_model=32",
    "model.n_layers=1",
    "model.d_ff=64",
    "train.epochs=2",
    "train.batch_size=16",
    "train.warmup_steps=2",
    "checkpoint.every_epochs=1",
]


@pytest.fixture(scope="module")
def chord_run(tmp_path_factory):
    """A finished 2-epoch run (8 steps) of the real profile, shrunk; a few seconds."""
    tmp = tmp_path_factory.mktemp("chords")
    sets = [a for s in TINY for a in ("--set", s)]
    args = ["train", str(PROFILE), "--headless", "--name", "tiny", "--runs-dir", str(tmp)]
    proc = subprocess.run(
        [sys.executable, "-m", "podium", *args, *sets],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, "PODIUM_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "chords: rendering 96 clips once" in proc.stdout + proc.stderr
    return RunDir(tmp / "tiny")


def test_metrics_json_holds_every_heads_metrics_and_matrices(chord_run, capsys):
    assert main(["metrics", str(chord_run.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    series, matrices = out["series"], out["matrices"]
    for head in ("type", "root", "bass"):
        for metric in ("accuracy", "top3", "f1"):
            points = series[f"val/{head}/{metric}"]
            assert [s for s, _ in points] == [4, 8] and all(0 <= v <= 1 for _, v in points)
        assert len(series[f"train/loss/{head}"]) == 8
        confusion = matrices[f"{head}/confusion"]
        assert confusion["step"] == 8 and sum(map(sum, confusion["values"])) == 32
        assert len(matrices[f"{head}/per_class"]["cols"]) == 3
    assert matrices["type/confusion"]["rows"] == list(TYPES)
    top3, accuracy = series["val/type/top3"][-1][1], series["val/type/accuracy"][-1][1]
    assert top3 >= accuracy


def test_history_writes_the_guides_format_one_entry_per_epoch(chord_run, tmp_path, capsys):
    path = tmp_path / "history.json"
    assert main(["metrics", str(chord_run.path), "--history", str(path)]) == 0
    assert "2 epochs" in capsys.readouterr().out
    history = json.loads(path.read_text())
    assert history["epoch"] == [1, 2] and history["step"] == [4, 8]
    for key in ("train_loss", "val_loss", "learning_rate", "type_accuracy", "root_accuracy"):
        assert len(history[key]) == 2 and all(isinstance(v, float) for v in history[key]), key
    assert "bass_accuracy" in history and "chord_accuracy" in history
    # train_loss is the mean of each epoch's steps, as stored.
    capsys.readouterr()
    main(["metrics", str(chord_run.path), "--json", "--series", "train/loss", "--series", "lr"])
    stored = json.loads(capsys.readouterr().out)["series"]
    losses = [v for _, v in stored["train/loss"]]
    assert history["train_loss"] == pytest.approx([np.mean(losses[:4]), np.mean(losses[4:])])
    assert history["learning_rate"][1] == pytest.approx(stored["lr"][-1][1])


def test_predict_prints_a_chord_and_its_top3_per_window(chord_run, tmp_path, capsys):
    cfg = ChordDataConfig(sample_rate=16000, clip_seconds=0.5)  # resampled to the run's 8 kHz
    audio = np.concatenate([render_clip(cfg, synth_backend(cfg), "val", i)[0] for i in range(3)])
    wav = tmp_path / "three.wav"
    wavfile.write(wav, 16000, audio)
    assert main(["predict", str(chord_run.path), str(wav)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run tiny · checkpoint best (step ") and "5 windows" in lines[0]
    rows = lines[1:]
    assert [r.split()[0] for r in rows] == ["0.00-0.50", "0.25-0.75", "0.50-1.00", "0.75-1.25",
                                           "1.00-1.50"]  # fmt: skip
    for row in rows:
        label, *top = row.split()[1:]
        # "C:maj C:maj 0.12 · A:min 0.08 · E:min 0.05": the label, then the top 3
        assert len(top) == 8 and top[2::3] == ["·", "·"] and top[0] == label
        assert all(":" in t for t in top[0::3]) and all(0 < float(p) <= 1 for p in top[1::3])
    assert main(["predict", str(chord_run.path), str(wav), "--json", "--checkpoint", "latest"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == "latest" and len(out["windows"]) == 5
    assert all(len(w["top"]) == 3 for w in out["windows"])
    (tmp_path / "bad.wav").write_text("no")
    assert main(["predict", str(chord_run.path), str(tmp_path / "bad.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.wav: cannot read it as WAV" in err
    assert main(["predict", str(chord_run.path), str(wav), "--checkpoint", "step-9"]) == 2
    assert "no checkpoint 'step-9' (have: " in capsys.readouterr().err


@sync
async def test_the_dashboard_shows_the_type_confusion_matrix_on_m(chord_run):
    app = PodiumApp(root=chord_run.path.parent, profile_dirs=[])
    async with app.run_test(size=(80, 24)) as pilot:
        runs = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 1, 10, "the runs table")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: "type/confusion" in screen.model.matrices, 15, "matrices")
        assert {"type/accuracy", "root/accuracy", "bass/accuracy"} <= set(screen.model.metrics)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MatrixScreen), 5, "the heatmap")
        modal = app.screen
        await pilot.pause()

        def title() -> str:
            return str(modal.query_one("#matrix-title").render())

        # The family's order, finished run or live: type first; m walks to root, then bass.
        assert "type/confusion" in title() and "32 x 32" in title() and "step 8" in title()
        drawn = modal.query_one(Heatmap).text().splitlines()
        assert drawn[2].split()[:2] == ["0", "maj"] and drawn[2 + 31].split()[:2] == ["31", "min13"]
        assert sum(line.count("█") for line in drawn[2:34]) >= 1  # the biggest count is shaded
        assert modal.query_one(".dialog").region.bottom <= 24
        assert modal.query_one("#matrix-summary").display  # 32 classes: summarised in words
        await pilot.press("m")
        await pilot.pause()
        assert "root/confusion" in title() and "12 x 12" in title()
        await pilot.press("m")
        await pilot.pause()
        assert "bass/confusion" in title() and "12 x 12" in title()
        assert modal.query_one(Heatmap).text().splitlines()[0].split()[:3] == ["C", "C#", "D"]


@pytest.mark.skipif(not Path(TMUX).exists(), reason="tmux is not installed")
def test_the_heatmap_in_a_real_80x24_terminal(chord_run, tmp_path):
    env = f"-u COLUMNS -u LINES PODIUM_RUNS={shlex.quote(str(chord_run.path.parent))} TERM=xterm-256color"
    command = f"cd {shlex.quote(str(ROOT))} && env {env} {shlex.quote(sys.executable)} -m podium"
    tmux = Tmux(tmp_path)
    try:
        tmux.start(command, 80, 24)
        poll(tmux, lambda s: "tiny" in s and "finished" in s, 60, "the runs table")
        tmux.keys("Enter")
        poll(tmux, lambda s: "(read-only)" in s, 30, "the run screen")
        tmux.keys("m")
        screen = poll(tmux, lambda s: "type/confusion" in s and "32 x 32" in s, 20, "the types")
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert "diagonal" in screen and " 0 maj " in screen and "↑↓ scroll" in screen
        assert "31 min13" not in screen  # below, until scrolled to
        tmux.keys("End")
        poll(tmux, lambda s: "31 min13" in s, 20, "the last row after scrolling")
        tmux.keys("Escape")
        tmux.keys("q")
    finally:
        tmux.kill()
