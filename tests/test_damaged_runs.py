"""Damaged runs through the commands a user types: ``podium runs``, ``metrics``, ``doctor`` and
``resume`` over a damaged ``run.json`` or ``metrics.db`` (real files, a real toy run), and the
dashboard's home screen listing them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from podium.engine.cli.main import main as cli_main
from podium.engine.store import RunReader
from podium.engine.store.health import HISTORY_FROM
from tests.test_store_damage import _bad_header, _truncated
from tests.tui_helpers import make_stored_run, sync, wait_for

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "families" / "toy" / "toy.toml")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A toy run stopped at step 6 with its checkpoint (copied by each test that resumes)."""
    root = tmp_path_factory.mktemp("trained")
    code = cli_main(["train", TOY, "--headless", "--max-steps", "6", "--name", "base",
                     "--runs-dir", str(root)])  # fmt: skip
    assert code == 0
    return root / "base"


def _copy(trained: Path, root: Path, name: str) -> Path:
    dst = root / name
    shutil.copytree(trained, dst)
    data = json.loads((dst / "run.json").read_text())
    (dst / "run.json").write_text(json.dumps({**data, "id": name}))
    return dst


def _damaged_root(root: Path) -> None:
    make_stored_run(root, "good", steps=50, checkpoints=False)
    bad_store = make_stored_run(root, "badstore", steps=50, checkpoints=False)
    _truncated(bad_store.db_path)
    make_stored_run(root, "garbled", steps=5, checkpoints=False)
    (root / "garbled" / "run.json").write_text("{\x00 not json")
    make_stored_run(root, "badtime", steps=5, checkpoints=False)
    data = json.loads((root / "badtime" / "run.json").read_text())
    (root / "badtime" / "run.json").write_text(json.dumps({**data, "created": "x"}))


def test_runs_lists_every_run_and_marks_the_damaged_ones(tmp_path, capsys):
    _damaged_root(tmp_path)
    code, out, err = run_cli(capsys, "runs", "--runs-dir", str(tmp_path))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"good", "badstore", "garbled", "badtime"}
    assert lines["good"].split()[2:4] == ["finished", "50"]
    for name in ("badstore", "garbled", "badtime"):
        assert "damaged" in lines[name].split()
    warnings = err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("podium: warning: run ") for w in warnings)
    assert any(
        f"{tmp_path / 'badtime' / 'run.json'}: damaged run.json (created:" in w for w in warnings
    )
    assert any(
        f"{tmp_path / 'badstore' / 'metrics.db'}: the metrics store is damaged" in w
        for w in warnings
    )

    code, out, _ = run_cli(capsys, "runs", "--json", "--runs-dir", str(tmp_path))
    rows = {r["id"]: r for r in json.loads(out)}
    assert code == 0 and rows["good"]["step"] == 50 and rows["good"]["state"] == "finished"
    assert {rows[n]["state"] for n in ("badstore", "garbled", "badtime")} == {"damaged"}


def test_metrics_and_doctor_on_a_damaged_store(tmp_path, capsys):
    _damaged_root(tmp_path)
    code, out, err = run_cli(capsys, "metrics", "badstore", "--json", "--runs-dir", str(tmp_path))
    assert code == 2 and out == ""
    assert (
        err.strip().splitlines() == [err.strip()]
        and f"{tmp_path / 'badstore' / 'metrics.db'}: the metrics store is damaged" in err
    )

    code, out, _ = run_cli(capsys, "doctor", "good", "--runs-dir", str(tmp_path))
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()] == ["ok", "ok", "ok"]
    code, out, _ = run_cli(capsys, "doctor", "badstore", "--runs-dir", str(tmp_path))
    assert code == 1
    store_line = next(ln for ln in out.splitlines() if "metrics store" in ln)
    assert store_line.startswith("BAD") and "integrity check failed: " in store_line
    code, out, _ = run_cli(capsys, "doctor", "badtime", "--json", "--runs-dir", str(tmp_path))
    found = {f["check"]: f for f in json.loads(out)}
    assert code == 1 and not found["run.json"]["ok"] and found["metrics store"]["ok"]


def test_resume_refuses_an_empty_store_unless_a_new_history_is_allowed(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, "emptied")
    run.joinpath("metrics.db").write_bytes(b"")  # e.g. a full disk, or a copy gone wrong
    args = ("resume", "emptied", "--headless", "--max-steps", "8", "--runs-dir", str(tmp_path))
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and "resuming" not in out
    assert err.strip() == (
        f"podium: error: {run / 'metrics.db'}: the metrics store is empty (0 bytes) but "
        "checkpoint latest is at step 6: resuming would start the run's curves over; restore "
        "the file, or --allow-new-history continues with a new history from step 6"
    )
    code, out, _ = run_cli(capsys, *args, "--allow-new-history")
    assert code == 0 and "resuming emptied from checkpoint latest (step 6)" in out
    assert "its metrics history starts over at step 6" in out
    with RunReader.open(run / "metrics.db") as store:
        assert store.meta_get(HISTORY_FROM) == "6"
        assert [s for s, _ in store.query("train/loss")] == [7, 8]
    # The gap is known now: a later resume continues without asking again.
    code, out, _ = run_cli(capsys, "resume", "emptied", "--headless", "--max-steps", "9",
                           "--runs-dir", str(tmp_path))  # fmt: skip
    assert code == 0


def test_resume_over_a_damaged_store_sets_it_aside_only_when_asked(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, "broken")
    _bad_header(run / "metrics.db")
    before = (run / "metrics.db").read_bytes()
    args = ("resume", "broken", "--headless", "--max-steps", "7", "--runs-dir", str(tmp_path))
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "the metrics store is damaged (file is not a database)" in err
    assert "podium doctor broken" in err and "--allow-new-history" in err
    assert (run / "metrics.db").read_bytes() == before  # refused: nothing touched
    code, _, _ = run_cli(capsys, *args, "--allow-new-history")
    assert code == 0
    kept = list(run.glob("metrics.db.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == before
    with RunReader.open(run / "metrics.db") as store:
        assert [s for s, _ in store.query("train/loss")] == [7]


@sync
async def test_the_home_screen_lists_good_runs_beside_a_damaged_one(tmp_path):
    from podium.tui.app import PodiumApp

    _damaged_root(tmp_path)
    app = PodiumApp(root=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        runs = app.screen.query_one("#runs")
        await wait_for(pilot, lambda: runs.row_count == 4, 15, "the runs table")
        assert str(runs.get_cell("good", "step")) == "50"


def test_a_branch_from_a_run_whose_store_is_damaged_asks_first(trained, tmp_path, capsys):
    parent = _copy(trained, tmp_path, "parent")
    _truncated(parent / "metrics.db")
    before = (parent / "metrics.db").read_bytes()
    args = ("resume", "parent", "--checkpoint", "latest", "--name", "child", "--headless",
            "--max-steps", "7", "--runs-dir", str(tmp_path))  # fmt: skip
    code, _, err = run_cli(capsys, *args)  # the copy of its history raised DatabaseError
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run parent's metrics store is damaged" in err and "--allow-new-history" in err
    assert not (tmp_path / "child").exists()
    code, _, _ = run_cli(capsys, *args, "--allow-new-history")
    assert code == 0 and (parent / "metrics.db").read_bytes() == before  # the parent untouched
    with RunReader.open(tmp_path / "child" / "metrics.db") as store:
        assert store.meta_get(HISTORY_FROM) == "6"
        assert [s for s, _ in store.query("train/loss")] == [7]
