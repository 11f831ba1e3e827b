"""``podium export RUN --tensorboard DIR`` and ``--csv``: a real toy run's history, read back with
TensorBoard's own reader and the csv module, equals its store (and the live mirror's files); bad
runs and existing outputs are one-line refusals that leave everything as it was."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from podium.engine.cli.main import main as cli_main
from tests.test_store_damage import _bad_header

pytest.importorskip("tensorboard")

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")
STEPS = 30  # two epochs of 15 steps, a validation and a probe after each


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs root holding ``toy``: trained once with the live TensorBoard mirror on."""
    root = tmp_path_factory.mktemp("export-runs")
    code = cli_main(["train", TOY, "--headless", "--name", "toy", "--runs-dir", str(root),
                     "--set", "train.epochs=2", "--set", "log.tensorboard=true"])  # fmt: skip
    assert code == 0
    return root


def _copy(runs: Path, name: str, into: Path) -> Path:
    """The toy run under another id (the exports name their outputs after it)."""
    dst = into / name
    shutil.copytree(runs / "toy", dst)
    data = json.loads((dst / "run.json").read_text())
    (dst / "run.json").write_text(json.dumps({**data, "id": name}))
    return dst


def _stored(run: Path) -> dict[str, list[tuple[int, float | None, float | None, float]]]:
    """Every row of the store, read with plain SQL: series -> [(step, epoch, wall, value)]."""
    con = sqlite3.connect(f"file:{run / 'metrics.db'}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT s.name, c.step, c.epoch, c.wall, c.value FROM scalars c "
            "JOIN series s ON s.id = c.series_id ORDER BY s.name, c.step"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list] = {}
    for name, step, epoch, wall, value in rows:
        out.setdefault(name, []).append((step, epoch, wall, math.nan if value is None else value))
    return out


def _board(directory: Path) -> dict[str, list[tuple[int, float, float]]]:
    """TensorBoard's own reading of one run's event files: tag -> [(step, wall, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }


def test_tensorboard_export_holds_every_series_as_stored_and_as_the_live_mirror(runs, tmp_path):
    board = tmp_path / "board"
    assert cli_main(["export", "toy", "--runs-dir", str(runs), "--tensorboard", str(board)]) == 0
    assert [p.name for p in board.iterdir()] == ["toy"]  # nothing left beside it
    got, stored = _board(board / "toy"), _stored(runs / "toy")
    assert {"train/loss/class", "train/loss/aux", "val/accuracy", "val/loss/class", "lr",
            "grad_norm", "throughput/tokens_per_s", "probe/confidence"} <= set(stored)  # fmt: skip
    assert set(got) == set(stored)
    for name, rows in stored.items():
        assert [s for s, _, _ in got[name]] == [r[0] for r in rows], name
        for (step, _, wall, value), (_, t_wall, t_value) in zip(rows, got[name], strict=True):
            assert t_value == pytest.approx(value, rel=1e-6, abs=1e-7), (name, step)  # float32
            assert t_wall == wall, (name, step)
    assert [s for s, _, _ in got["train/loss"]] == list(range(1, STEPS + 1))
    assert [s for s, _, _ in got["val/loss"]] == [15, 30]
    # The live mirror wrote the same points with the same writer: an exported run looks the same.
    live = _board(runs / "toy" / "tensorboard")
    assert live == got


def test_runs_exported_into_one_folder_show_side_by_side(runs, tmp_path):
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    other = _copy(runs, "other", tmp_path / "runs")
    board = tmp_path / "board"
    assert cli_main(["export", "toy", "--runs-dir", str(runs), "--tensorboard", str(board)]) == 0
    assert cli_main(["export", str(other), "--tensorboard", str(board)]) == 0
    mux = EventMultiplexer().AddRunsFromDirectory(str(board))
    mux.Reload()
    assert set(mux.Runs()) == {"toy", "other"}
    assert len(mux.Tensors("other", "val/accuracy")) == 2


def test_csv_export_equals_the_store_and_podium_metrics(runs, tmp_path, capsys):
    out = tmp_path / "history.csv"
    code, said, _ = run_cli(capsys, "export", "toy", "--runs-dir", str(runs), "--csv", str(out))
    assert code == 0 and f"to {out}" in said
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == ("run", "series", "step", "epoch", "wall", "value")
        rows = list(reader)
    assert {r["run"] for r in rows} == {"toy"}
    got: dict[str, list] = {}
    for r in rows:
        got.setdefault(r["series"], []).append(
            (int(r["step"]), float(r["epoch"]), float(r["wall"]), float(r["value"]))
        )
    assert got == _stored(runs / "toy")  # every float exact: shortest round-trip form
    code, said, _ = run_cli(capsys, "metrics", "toy", "--runs-dir", str(runs), "--json")
    metrics = json.loads(said)["series"]
    assert {n: [[s, v] for s, _, _, v in pts] for n, pts in got.items()} == metrics


def test_csv_into_a_folder_or_to_stdout(runs, tmp_path, capsys):
    code, _, _ = run_cli(capsys, "export", "toy", "--runs-dir", str(runs), "--csv", str(tmp_path))
    assert code == 0
    in_folder = (tmp_path / "toy.csv").read_text()
    code, out, err = run_cli(capsys, "export", "toy", "--runs-dir", str(runs), "--csv", "-")
    assert code == 0 and out == in_folder
    assert "to stdout" in err  # the report stays out of the CSV
    assert len(list(csv.reader(io.StringIO(out)))) == 1 + sum(
        len(v) for v in _stored(runs / "toy").values()
    )


def _one_line_error(capsys, *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("podium: error: ") and "Traceback" not in err
    return err


def test_an_existing_output_is_kept_unless_forced(runs, tmp_path, capsys):
    base = ["export", "toy", "--runs-dir", str(runs)]
    out = tmp_path / "mine.csv"
    out.write_text("a user's own file\n")
    err = _one_line_error(capsys, *base, "--csv", str(out))
    assert "mine.csv exists (--force replaces it)" in err
    assert out.read_text() == "a user's own file\n"
    assert run_cli(capsys, *base, "--csv", str(out), "--force")[0] == 0
    assert out.read_text().startswith("run,series,step,epoch,wall,value\n")

    board = tmp_path / "board"
    assert run_cli(capsys, *base, "--tensorboard", str(board))[0] == 0
    before = sorted(p.name for p in (board / "toy").iterdir())
    assert "exists (--force replaces its event files)" in _one_line_error(
        capsys, *base, "--tensorboard", str(board)
    )
    assert sorted(p.name for p in (board / "toy").iterdir()) == before
    (board / "toy" / "notes.txt").write_text("mine")  # not an event file: never replaced
    err = _one_line_error(capsys, *base, "--tensorboard", str(board), "--force")
    assert "holds more than TensorBoard event files (notes.txt)" in err
    (board / "toy" / "notes.txt").unlink()
    assert run_cli(capsys, *base, "--tensorboard", str(board), "--force")[0] == 0
    assert len(list((board / "toy").iterdir())) == 1  # the new file replaced the old one
    assert len(_board(board / "toy")["train/loss"]) == STEPS
    # The run's own directory is never a target, even forced (runs/toy is the run itself).
    err = _one_line_error(capsys, *base, "--tensorboard", str(runs), "--force")
    assert "is inside run toy's directory" in err


def test_bad_runs_and_flags_are_one_line_and_write_nothing(runs, tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    out = tmp_path / "out"
    out.mkdir()
    err = _one_line_error(capsys, "export", "nope", "--runs-dir", str(root), "--csv", str(out))
    assert "no run 'nope'" in err
    empty = _copy(runs, "empty", root)
    (empty / "metrics.db").unlink()
    err = _one_line_error(capsys, "export", str(empty), "--csv", str(out))
    assert "run empty: no metrics store" in err
    damaged = _copy(runs, "damaged", root)
    _bad_header(damaged / "metrics.db")
    err = _one_line_error(capsys, "export", str(damaged), "--tensorboard", str(out))
    assert "the metrics store is damaged" in err
    err = _one_line_error(capsys, "export", "toy", "--runs-dir", str(runs))
    assert "say what to write: --onnx OUTDIR, --tensorboard DIR, --csv FILE" in err
    err = _one_line_error(capsys, "export", "toy", "--runs-dir", str(runs), "--onnx", str(out))
    assert "family toy has no exporter" in err
    err = _one_line_error(
        capsys, "export", "toy", "--runs-dir", str(runs), "--csv", str(tmp_path / "no" / "x.csv")
    )
    assert "no folder" in err
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    err = _one_line_error(
        capsys, "export", "toy", "--runs-dir", str(runs), "--tensorboard", str(out)
    )
    assert "pip install 'podium[tensorboard]'" in err
    assert list(out.iterdir()) == []


def test_csv_keeps_nan_inf_and_a_missing_epoch_and_an_empty_store_is_refused(tmp_path, capsys):
    from podium.engine.runs import RunInfo, create_run
    from podium.engine.store import RunStore

    root = tmp_path / "runs"
    run = create_run(root, profile_name="toy", name="odd")
    run.write_info(RunInfo(id="odd", profile="toy", family="toy", created=1.0, host="h",
                           user="u", profile_source=TOY, pids=[1]))  # fmt: skip
    store = RunStore.open(run.db_path)
    store.flush()  # a schema and no series: a run that died before its first step
    err = _one_line_error(capsys, "export", "odd", "--runs-dir", str(root), "--csv", "-")
    assert "run odd: its store holds no series yet" in err
    store.add_scalars(1, None, 10.5, {"train/loss": math.nan, "lr": 1e-3})  # type: ignore[arg-type]
    store.add_scalars(2, 0.5, 11.25, {"train/loss": math.inf, "lr": 1 / 3})
    store.flush()
    store.close()
    code, out, _ = run_cli(capsys, "export", "odd", "--runs-dir", str(root), "--csv", "-")
    assert code == 0
    assert sorted(out.splitlines()[1:]) == [
        "odd,lr,1,,10.5,0.001",
        "odd,lr,2,0.5,11.25,0.3333333333333333",
        "odd,train/loss,1,,10.5,nan",
        "odd,train/loss,2,0.5,11.25,inf",
    ]
