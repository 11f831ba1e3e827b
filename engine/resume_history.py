"""Before a run continues from a checkpoint: is its metrics history there to continue?

Resuming truncates the store to the checkpoint's step and appends. Over a store that is missing,
empty (0 bytes, e.g. a full disk or a bad copy) or damaged, that silently started the curves over
with nothing before the checkpoint, or failed later in the writer thread. So the history is
checked first: a lost or damaged one is refused with one line saying what to do, and continued
only when the user asks (``--allow-new-history``). Then a damaged file is set aside (kept, for
recovery by hand) and the new store records the step its history starts at (``history_from``),
so later resumes, and readers, know the gap is known.
"""

from __future__ import annotations

from podium.engine.errors import RunError
from podium.engine.runs import RunDir
from podium.engine.store import RunStore
from podium.engine.store.health import HISTORY_FROM, StoreState, inspect_store, set_aside


def history_problem(run: RunDir, state: StoreState, step: int, checkpoint: str) -> str:
    """The one-line refusal for ``state`` (not "ok") of ``run``'s store, for a checkpoint at
    ``step``; "" when nothing is lost (a checkpoint at step 0 has no history before it)."""
    path = run.db_path
    allow = (
        f"--allow-new-history continues with a new history from step {step}"
        if state.kind != "damaged"
        else f"--allow-new-history sets it aside (kept beside it) and continues with a new "
        f"history from step {step}"
    )
    if state.kind == "damaged":
        return (
            f"{path}: the metrics store is damaged ({state.detail}); `podium doctor {run.id}` "
            f"shows what is wrong; {allow}"
        )
    if step <= 0:
        return ""
    what = "missing" if state.kind == "missing" else f"empty ({state.detail})"
    return (
        f"{path}: the metrics store is {what} but checkpoint {checkpoint} is at step {step}: "
        f"resuming would start the run's curves over; restore the file, or {allow}"
    )


def check_history(
    run: RunDir, step: int, *, checkpoint: str, allow_new_history: bool = False
) -> str | None:
    """Refuse (``RunError``) continuing ``run`` from ``checkpoint`` at ``step`` over a lost or
    damaged history, unless ``allow_new_history``: then start a new one and return a line
    saying so. The caller holds the run's lock. None when the history is fine."""
    state = inspect_store(run.db_path)
    if state.kind == "ok":
        return None
    problem = history_problem(run, state, step, checkpoint)
    if not problem:
        return None
    if not allow_new_history:
        raise RunError(problem)
    return start_new_history(run, step)


def start_new_history(run: RunDir, step: int) -> str:
    """Set the store aside (if any) and start an empty one whose history begins at ``step``."""
    kept = set_aside(run.db_path)
    store = RunStore.open(run.db_path)
    try:
        store.meta_set(HISTORY_FROM, str(int(step)))
    finally:
        store.close()
    where = f" (the old store is kept as {kept.name})" if kept is not None else ""
    return f"podium: run {run.id}: its metrics history starts over at step {step}{where}"
