"""The benchmark suite's runner (bench/run.py, ``podium bench``): its report, its comparison of
two reports and its refusals. No real benchmark runs here: the store suite at its tiny size
(a few thousand points, figures meaningless) is the runner's smallest real subject."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.podium_cli import ROOT, podium

RUN = ROOT / "bench" / "run.py"


def bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``bench/run.py ARGS`` as a user runs it (no torch import for --compare)."""
    return subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """One real run through the command: ``podium bench --tiny --only store --json OUT``."""
    out = tmp_path_factory.mktemp("bench") / "a.json"
    proc = podium("bench", "--tiny", "--only", "store", "--json", str(out), timeout=180)
    return out, json.loads(out.read_text()), proc


def test_podium_bench_writes_a_report_with_the_machine_and_one_row_per_ratio(report):
    _, data, proc = report
    m = data["machine"]
    assert m["hostname"] and m["cpu"] and m["cores_usable"] > 0 and m["torch"]
    assert m["git_commit"] and m["date"].startswith("20")
    assert data["size"] == "tiny" and data["device"].startswith("cpu")
    assert set(data["wall_s"]) == {"store"} and data["total_wall_s"] > 0
    rows = data["rows"]
    assert len(rows) == 5 and all(r["suite"] == "store" for r in rows)
    for r in rows:
        assert r["a"] > 0 and r["b"] > 0 and r["ratio"] == pytest.approx(r["a"] / r["b"])
        assert r["command"].startswith("python bench/bench_store.py --points 2000")
        assert r["suite_command"] == "podium bench --tiny --only store"
        assert "(tiny)" in r["name"] and r["device"] == data["device"] == "cpu"
        assert r["torch"] == m["torch"] and m["hostname"] in r["machine"]
        assert (r["target"] is None) == (r["ok"] is None)
    targeted = [r for r in rows if r["target"]]
    assert targeted and all(isinstance(r["ok"], bool) for r in targeted)
    # The printed table: the header names the machine, every row is there.
    assert f"torch {m['torch']}" in proc.stdout and m["hostname"] in proc.stdout
    assert all(r["name"] in proc.stdout for r in rows)


def test_compare_prints_both_ratios_the_change_and_rows_only_in_one(report, tmp_path):
    path_a, data, _ = report
    b = json.loads(json.dumps(data))
    first, *rest = b["rows"]
    first["ratio"] = data["rows"][0]["ratio"] * 1.5  # a 50% change of the first ratio
    dropped = rest.pop()  # a row the newer commit lost...
    rest.append({**rest[0], "name": "a row only B has", "ratio": 2.0})  # ...and one it gained
    b["rows"] = [first, *rest]
    b["machine"]["git_commit"] = "bbbbbbbbbbbb"
    path_b = tmp_path / "b.json"
    path_b.write_text(json.dumps(b))
    proc = bench("--compare", str(path_a), str(path_b))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "bbbbbbbbbbbb" in lines[1] and data["machine"]["git_commit"] in lines[0]
    (changed,) = [ln for ln in lines if ln.startswith(first["name"])]
    assert "+50.0%" in changed
    (gone,) = [ln for ln in lines if ln.startswith(dropped["name"])]
    assert "only in A" in gone
    (new,) = [ln for ln in lines if ln.startswith("a row only B has")]
    assert "only in B" in new


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not JSON"),
        ('{"rows": 3}', "not a podium bench report"),
        ('{"rows": [{"name": "x", "ratio": "fast"}]}', "ratio must be a number"),
    ],
)
def test_a_bad_report_is_one_line_exit_2(report, tmp_path, text, says):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    proc = bench("--compare", str(report[0]), str(bad))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("podium bench: error:") and str(bad) in line and says in line
    assert "Traceback" not in proc.stderr


def test_an_unknown_suite_is_one_line_exit_2():
    proc = bench("--only", "store", "nope")
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert "--only: no suite nope" in line and "store" in line


def test_podium_bench_without_a_suite_says_where_it_looked(tmp_path, monkeypatch, capsys):
    from podium.engine.cli.main import main

    monkeypatch.setenv("PODIUM_BENCH_DIR", str(tmp_path))  # a folder with no run.py
    assert main(["bench", "--quick"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("podium: error: bench: no benchmark suite here")
    assert str(tmp_path / "run.py") in line
