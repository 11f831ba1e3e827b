"""``podium doctor RUN``: check a run's files and say, per part, what is wrong and what to do.

Each check is a function of the run directory returning ``Finding``s; ``CHECKS`` lists them in the
order they are shown. A new check (say, checkpoint checksums) is one more entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podium.engine.errors import PodiumError
from podium.engine.runs import RunDir
from podium.engine.store.health import inspect_store, integrity_check


@dataclass(frozen=True)
class Finding:
    """One result of one check: ``ok`` or a problem, in one line."""

    check: str
    ok: bool
    text: str


Check = Callable[[RunDir], list[Finding]]


def check_run_json(run: RunDir) -> list[Finding]:
    try:
        info = run.info()
    except PodiumError as exc:
        return [Finding("run.json", False, f"{exc}; the run's other files are unaffected")]
    return [Finding("run.json", True, f"profile {info.profile} ({info.family}), user {info.user}")]


def check_store(run: RunDir) -> list[Finding]:
    """SQLite's own ``PRAGMA integrity_check`` of ``metrics.db``, and whether it has a history."""
    name = "metrics store"
    state = inspect_store(run.db_path, thorough=False)
    if state.kind in ("missing", "empty"):
        what = "missing" if state.kind == "missing" else f"empty ({state.detail})"
        return [
            Finding(
                name,
                False,
                f"{run.db_path}: {what}: the run has no metrics history; "
                f"`podium resume {run.id} --allow-new-history` starts one at its checkpoint",
            )
        ]
    problems = integrity_check(run.db_path)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return [
            Finding(
                name,
                False,
                f"{run.db_path}: integrity check failed: {problems[0]}{more}; "
                f"`podium resume {run.id} --allow-new-history` sets it aside and starts a new "
                "history (the file is kept)",
            )
        ]
    since = "" if state.history_from is None else f", history from step {state.history_from}"
    return [Finding(name, True, f"integrity check ok{since}")]


def check_checkpoints(run: RunDir) -> list[Finding]:
    """Every checkpoint's metadata has its weights file, of the size it recorded."""
    from podium.engine.checkpoints import list_checkpoints, read_info

    name = "checkpoints"
    directory = run.checkpoint_dir
    findings: list[Finding] = []
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if meta.name.startswith(".tmp-"):
            continue
        info = read_info(meta)
        if info is None:
            findings.append(Finding(name, False, f"{meta}: unreadable checkpoint metadata"))
            continue
        weights = directory / f"{info.name}.pt"
        try:
            size = weights.stat().st_size
        except OSError:
            findings.append(Finding(name, False, f"{weights}: missing (its {meta.name} remains)"))
            continue
        if info.size and size != info.size:
            findings.append(
                Finding(name, False, f"{weights}: {size} bytes, its metadata says {info.size}")
            )
            continue
        findings.extend(_verify_weights(name, weights, info.step))
    complete = list_checkpoints(directory)
    if not findings:
        newest = f", newest {complete[-1].name} at step {complete[-1].step}" if complete else ""
        findings.append(Finding(name, True, f"{len(complete)} complete{newest}"))
    return findings


def _verify_weights(name: str, weights: Path, step: int) -> list[Finding]:
    """The file loads, matches its checksum and holds only finite weights (what a resume would
    trust). Reads the whole file: seconds for a large model, which is what doctor is for."""
    from podium.engine.checkpoints import load_state, nonfinite_weights
    from podium.engine.errors import CheckpointError

    try:
        state = load_state(weights)
    except CheckpointError as exc:
        return [Finding(name, False, f"{weights} (step {step}): {exc}")]
    bad = nonfinite_weights(state)
    if bad:
        return [Finding(name, False, f"{weights} (step {step}): non-finite weights in {bad[0]}")]
    return []


CHECKS: list[tuple[str, Check]] = [
    ("run.json", check_run_json),
    ("metrics store", check_store),
    ("checkpoints", check_checkpoints),
]
"""The checks ``podium doctor`` runs, in order."""


def diagnose(run: RunDir, checks: list[tuple[str, Check]] | None = None) -> list[Finding]:
    """Every check's findings; a check that itself fails is a finding, not a crash."""
    findings: list[Finding] = []
    for name, check in CHECKS if checks is None else checks:
        try:
            findings += check(run)
        except (OSError, PodiumError) as exc:
            findings.append(Finding(name, False, f"could not be checked: {exc}"))
    return findings
