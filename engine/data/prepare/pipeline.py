"""``prepare``: a source's files through a family's tokeniser into a prepared directory.

Layout of the output directory::

    prepared.json           what it is (family, tokeniser fingerprint, counts, file names);
                            written last, so a directory without it was never finished
    vocab.json              the tokeniser's vocabulary
    tokens-<gen>.npy        every kept piece's tokens, concatenated (memory-mapped by readers)
    offsets-<gen>.npy       piece i is tokens[offsets[i]:offsets[i + 1]]
    pieces-<gen>.jsonl      one line per kept piece: file, content hash, split, labels, tokens
    report.json summary.txt what was read, kept and skipped (every skipped file and why)
    shards/<fingerprint>/   one shard per piece (content + labels + tokeniser): the work done

Each run writes a new generation of the three big files and then replaces ``prepared.json``,
so a reader sees the old generation or the new one, never a mix; the old one is then removed.
Files are parsed in worker processes; the parent only hashes, schedules and counts, and keeps
no tokens in memory (shards are concatenated into ``tokens-<gen>.npy`` one at a time).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from podium.engine.data.prepare.progress import Progress
from podium.engine.data.prepare.report import Report
from podium.engine.data.prepare.shards import (
    ShardStore,
    content_hash,
    fingerprint_digest,
    piece_key,
)
from podium.engine.data.prepare.sources import Item, Refused, iter_source
from podium.engine.data.prepare.worker import _STATE, Result, Task, init_worker, run_task
from podium.engine.data.prepared import PREPARED_FORMAT
from podium.engine.errors import DataError
from podium.engine.families.registry import PrepareSpec

IN_FLIGHT_PER_WORKER = 4
"""Files queued per worker: enough to keep them busy, few enough that memory stays flat."""


def default_workers() -> int:
    """The CPUs this process may use: its affinity mask capped by its cgroup's CPU quota (what
    Slurm, taskset or a container granted, not the machine's core count), whole CPUs only."""
    from podium.engine.cpu_share import usable_cpus

    return max(1, int(usable_cpus()))


def prepare(
    source: str,
    src_dir: Path,
    out_dir: Path,
    spec: PrepareSpec,
    *,
    family: str,
    profile: str,
    workers: int | None = None,
    labels_file: Path | None = None,
    stream: TextIO | None = None,
    tty: bool | None = None,
) -> Report:
    """Prepare ``src_dir`` into ``out_dir`` (created; re-used incrementally when it exists).

    Raises:
        DataError: bad source or labels file, or no file was usable.
        KeyboardInterrupt: after Ctrl-C, once the files being parsed are stored; the directory
            keeps its previous generation and every finished shard (a re-run continues).
    """
    workers = workers or default_workers()
    started = time.monotonic()
    src_dir = src_dir.expanduser().resolve()
    out_dir = out_dir.expanduser().resolve()
    tokenizer = spec.tokenizer
    fingerprint = tokenizer.fingerprint()
    store = ShardStore(out_dir / "shards" / fingerprint_digest(fingerprint))
    store.root.mkdir(parents=True, exist_ok=True)
    entries = list(iter_source(source, src_dir, labels_file))
    report = Report(
        source=source,
        source_dir=str(src_dir),
        out_dir=str(out_dir),
        family=family,
        profile=profile,
        workers=workers,
        files_read=len(entries),
    )
    if not entries:
        raise DataError(f"{src_dir}: no .mid/.midi files found")
    progress = Progress(len(entries), stream, tty=tty)
    outcome: dict[int, dict[str, Any]] = {}  # entry index -> result
    hashes: dict[int, str] = {}

    def note(i: int, result: dict[str, Any]) -> None:
        outcome[i] = result
        progress.advance(skipped=result["status"] != "kept")

    pending: list[tuple[int, Task]] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Refused):
            note(i, {"status": "skipped", "reason": entry.reason})
            continue
        item: Item = entry
        try:
            if item.path.stat().st_size == 0:
                note(i, {"status": "skipped", "reason": "empty: 0 bytes"})
                continue
            digest = content_hash(item.path)
        except OSError as exc:
            note(i, {"status": "skipped", "reason": f"unreadable: {exc.strerror or exc}"})
            continue
        hashes[i] = digest
        key = piece_key(digest, item.labels, tokenizer.label_fields)
        done = store.lookup(key)
        if done is not None:
            report.reused += 1
            note(i, {**done, "key": key})
            continue
        pending.append((i, Task(key, item.file, str(item.path), item.labels)))
    try:
        for i, result in _run(pending, tokenizer, store, workers):
            report.encoded += 1
            note(i, {**vars(result)})
    finally:
        progress.close()

    _finish(entries, outcome, hashes, store, spec, out_dir, report, fingerprint)
    report.seconds = time.monotonic() - started
    report.write(out_dir)
    return report


def _run(pending: list[tuple[int, Task]], tokenizer: Any, store: ShardStore, workers: int) -> Any:
    """Yield ``(entry index, Result)`` as files finish; in this process for one worker."""
    if not pending:
        return
    if workers == 1 or len(pending) == 1:
        _STATE["tokenizer"], _STATE["store"] = tokenizer, store
        for i, task in pending:
            yield i, run_task(task)
        return
    ctx = multiprocessing.get_context(_start_method())
    with cf.ProcessPoolExecutor(
        max_workers=min(workers, len(pending)),
        mp_context=ctx,
        initializer=init_worker,
        initargs=(tokenizer, str(store.root)),
    ) as pool:
        window = IN_FLIGHT_PER_WORKER * workers
        queue = iter(pending)
        running: dict[cf.Future[Result], int] = {}
        try:
            for i, task in queue:
                running[pool.submit(run_task, task)] = i
                if len(running) >= window:
                    break
            while running:
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    yield i, fut.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        running[pool.submit(run_task, nxt[1])] = nxt[0]
        except BaseException:
            # Ctrl-C: drop what has not started; what is running finishes and stores its shard.
            for fut in running:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _start_method() -> str:
    """fork when this process is single-threaded and holds no torch (``podium prepare`` itself):
    workers start in milliseconds, not the second a fresh interpreter takes to import. Else
    spawn: inside ``podium train`` the parent holds torch's threads, and a forked child of a
    multi-threaded process can deadlock on a lock another thread held."""
    alone = threading.active_count() == 1 and "torch" not in sys.modules
    return "fork" if alone and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _split_of(digest: str, val: float, test: float) -> str:
    h = int(digest[:13], 16) / 16**13
    return "test" if h < test else "val" if h < test + val else "train"


def _finish(
    entries: list[Item | Refused],
    outcome: dict[int, dict[str, Any]],
    hashes: dict[int, str],
    store: ShardStore,
    spec: PrepareSpec,
    out_dir: Path,
    report: Report,
    fingerprint: dict[str, Any],
) -> None:
    pieces: list[dict[str, Any]] = []
    first_of: dict[str, str] = {}
    for i, entry in enumerate(entries):
        result = outcome[i]
        if result["status"] != "kept":
            report.skipped.append({"file": entry.file, "reason": result["reason"]})
            continue
        digest = hashes[i]
        if digest in first_of:
            report.skipped.append(
                {"file": entry.file, "reason": f"duplicate: same bytes as {first_of[digest]}"}
            )
            continue
        first_of[digest] = entry.file
        assert isinstance(entry, Item)
        pieces.append(
            {
                "file": entry.file,
                "hash": digest,
                "key": result["key"],
                "split": _split_of(digest, spec.val_fraction, spec.test_fraction),
                "n_tokens": int(result["n_tokens"]),
                "labels": entry.labels,
            }
        )
    if not pieces:
        report.write(out_dir)
        raise DataError(
            f"{report.source_dir}: none of the {report.files_read} MIDI files is usable "
            f"(see {out_dir / 'summary.txt'})"
        )
    _ensure_val(pieces, spec.val_fraction)
    report.pieces_kept = len(pieces)
    report.tokens = sum(p["n_tokens"] for p in pieces)
    report.splits = {s: sum(p["split"] == s for p in pieces) for s in ("train", "val", "test")}

    gen = f"{time.time_ns():x}"
    first = store.tokens(pieces[0]["key"])
    total = report.tokens
    tokens_path = out_dir / f"tokens-{gen}.npy"
    arr = np.lib.format.open_memmap(
        tokens_path, mode="w+", dtype=first.dtype, shape=(total, *first.shape[1:])
    )
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    at = 0
    for n, p in enumerate(pieces):
        t = first if n == 0 else store.tokens(p["key"])
        if t.shape[1:] != first.shape[1:] or t.dtype != first.dtype:
            raise DataError(f"{p['file']}: its tokens' shape or dtype differs from the others'")
        arr[at : at + len(t)] = t
        at += len(t)
        offsets[n + 1] = at
    arr.flush()
    del arr
    np.save(out_dir / f"offsets-{gen}.npy", offsets)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pieces)
    (out_dir / f"pieces-{gen}.jsonl").write_text(lines, encoding="utf-8")
    vocab = json.dumps(spec.tokenizer.vocabulary(), indent=1, ensure_ascii=False)
    (out_dir / ".vocab.json.tmp").write_text(vocab + "\n", encoding="utf-8")
    (out_dir / ".vocab.json.tmp").replace(out_dir / "vocab.json")
    manifest = {
        "format": PREPARED_FORMAT,
        "family": report.family,
        "profile": report.profile,
        "source": report.source,
        "source_dir": report.source_dir,
        "fingerprint": fingerprint,
        "generation": gen,
        "tokens": tokens_path.name,
        "offsets": f"offsets-{gen}.npy",
        "pieces": f"pieces-{gen}.jsonl",
        "n_pieces": len(pieces),
        "n_tokens": total,
        "splits": report.splits,
        "val_fraction": spec.val_fraction,
        "test_fraction": spec.test_fraction,
    }
    tmp = out_dir / ".prepared.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "prepared.json")  # the commit point
    for old in out_dir.glob("*-*.*"):
        if old.name.split("-", 1)[0] in ("tokens", "offsets", "pieces") and gen not in old.name:
            old.unlink(missing_ok=True)


def _ensure_val(pieces: list[dict[str, Any]], val_fraction: float) -> None:
    """With two pieces or more and a validation share, at least one piece validates and one
    trains: the lowest-hash training piece moves when the hash left validation empty."""
    if len(pieces) < 2 or val_fraction <= 0:
        return
    train = [p for p in pieces if p["split"] == "train"]
    if not any(p["split"] == "val" for p in pieces) and len(train) >= 2:
        min(train, key=lambda p: p["hash"])["split"] = "val"
    if not train:
        max(pieces, key=lambda p: p["hash"])["split"] = "train"
