"""``podium prepare`` against miditok's REMI tokeniser, and its memory against corpus size.

Everything is measured in this one run, on files written under ``--tmp``:

1. throughput: ``--files`` demo-corpus pieces (labelled, 8 bars) prepared by ``podium prepare``
   end to end (hashing, parsing with pretty_midi, CP tokens, shards, the concatenated output)
   with 1 and 2 worker processes, side by side with miditok's REMI (the field's standard
   tokeniser; symusic parses) encoding the same files in the same number of processes. Prints
   files/s and the ratio podium / miditok per worker count (goal: >= 1).
2. memory: a synthetic corpus of ``--small`` and of ``--large`` distinct small files prepared
   with 2 workers in a fresh process each; prints the peak RSS of the parent and of the largest
   worker (goal: flat in corpus size: shards on disk, not one list in RAM).

    .venv/bin/python bench/bench_prepare.py [--files 300] [--small 1000] [--large 10000] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
from report_rows import Row, row

from podium.engine.data.demo_corpus import generate_demo_corpus


def _miditok_init() -> None:
    global _TOK
    from miditok import REMI, TokenizerConfig

    _TOK = REMI(TokenizerConfig())


def _miditok_encode(path: str) -> int:
    return sum(len(s.ids) for s in _TOK(Path(path)))


def miditok_rate(files: list[Path], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        _miditok_init()
        n = sum(_miditok_encode(str(f)) for f in files)
    else:
        from podium.engine.data.prepare.pipeline import _start_method

        ctx = multiprocessing.get_context(_start_method())  # as podium's pool starts its workers
        with ctx.Pool(workers, initializer=_miditok_init) as pool:
            n = sum(pool.map(_miditok_encode, [str(f) for f in files], chunksize=8))
    assert n > 0
    return len(files) / (time.perf_counter() - start)


def podium_rate(src: Path, out: Path, workers: int) -> float:
    from podium.engine.data.prepare import prepare
    from podium.engine.families.cp.prepare import CPTokenizer
    from podium.engine.families.registry import PrepareSpec

    shutil.rmtree(out, ignore_errors=True)
    spec = PrepareSpec(tokenizer=CPTokenizer(), val_fraction=0.1)
    start = time.perf_counter()
    with open("/dev/null", "w") as null:
        report = prepare(
            "midi-folder",
            src,
            out,
            spec,
            family="cp",
            profile="bench",
            workers=workers,
            stream=null,
        )
    assert report.encoded == report.files_read
    return report.files_read / (time.perf_counter() - start)


def synthetic_corpus(root: Path, n: int) -> None:
    """``n`` distinct small two-bar files named Q1_..Q4_ (no labels file needed)."""
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        track = [mido.MetaMessage("set_tempo", tempo=400000 + k, time=0)]
        for j in range(16):
            p = 48 + (k * 7 + j * 5) % 36
            track += [
                mido.Message("note_on", note=p, velocity=64 + j, time=0),
                mido.Message("note_off", note=p, velocity=0, time=240),
            ]
        mid = mido.MidiFile(type=1, ticks_per_beat=480)
        mid.tracks.append(mido.MidiTrack(track))
        mid.save(str(root / f"Q{1 + k % 4}_{k:06d}.mid"))


MEASURE = """
import json, resource, sys
from pathlib import Path
from podium.engine.data.prepare import prepare
from podium.engine.families.cp.prepare import CPTokenizer
from podium.engine.families.registry import PrepareSpec
r = prepare("midi-folder", Path(sys.argv[1]), Path(sys.argv[2]),
            PrepareSpec(tokenizer=CPTokenizer(), val_fraction=0.1), family="cp", profile="bench",
            workers=2, stream=open("/dev/null", "w"))
print(json.dumps({"kept": r.pieces_kept, "seconds": r.seconds,
                  "parent_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


SUITE_SIZES = {"tiny": (8, (1,)), "quick": (60, (1,)), "full": (300, (1, 2))}
"""Per suite size: (demo pieces, worker counts). The memory part stays this script's own."""


def bench_rows(size: str = "full") -> list[Row]:
    """``podium prepare`` files/s over miditok REMI's on the same files, per worker count."""
    files_n, workers_list = SUITE_SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix="podium-bench-prepare-"))
    rows: list[Row] = []
    try:
        demo = tmp / "demo"
        generate_demo_corpus(demo, n_pieces=files_n, seed=0, bars=8)
        files = sorted((demo / "midi").glob("*.mid"))
        for workers in workers_list:
            ours = podium_rate(demo, tmp / "out", workers)
            theirs = miditok_rate(files, workers)
            rows.append(
                row(
                    f"prepare vs miditok REMI, {files_n} demo pieces, {workers} worker(s)"
                    + ("" if size == "full" else f" ({size})"),
                    ours,
                    theirs,
                    a_is="podium prepare end to end (hash, parse, CP tokens, shards)",
                    b_is="miditok REMI encoding the same files",
                    unit="files/s",
                    target=">= 1",
                    command=f"python bench/bench_prepare.py --files {files_n}",
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench_prepare-"))
    demo = tmp / "demo"
    if not (demo / "labels.jsonl").exists():
        generate_demo_corpus(demo, n_pieces=args.files, seed=0, bars=8)
    files = sorted((demo / "midi").glob("*.mid"))
    print(f"throughput: {len(files)} demo pieces (8 bars), {tmp}")
    print(f"{'workers':>7}  {'podium files/s':>14}  {'miditok REMI files/s':>20}  {'ratio':>6}")
    for workers in (1, 2):
        ours = podium_rate(demo, tmp / "out", workers)
        theirs = miditok_rate(files, workers)
        print(f"{workers:>7}  {ours:>14.1f}  {theirs:>20.1f}  {ours / theirs:>6.2f}")

    print("memory: synthetic corpora, 2 workers, a fresh process each")
    for n in (args.small, args.large):
        src = tmp / f"synthetic-{n}"
        if not src.exists():
            synthetic_corpus(src, n)
        out = tmp / f"synthetic-{n}.prepared"
        shutil.rmtree(out, ignore_errors=True)
        res = subprocess.run(
            [sys.executable, "-c", MEASURE, str(src), str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"  {n:>6} files: kept {m['kept']}, {m['seconds']:.1f} s, peak RSS parent "
            f"{m['parent_kib'] / 1024:.0f} MiB, largest worker {m['worker_kib'] / 1024:.0f} MiB"
        )


if __name__ == "__main__":
    main()
