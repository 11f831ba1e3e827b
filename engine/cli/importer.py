"""``podium import emopia CHECKPOINT --dictionary dictionary.pkl [--profile P] [--heads N]``.

Makes a podium run from a released EMOPIA / compound-word-transformer checkpoint: the state dict
is converted by the family's ``emopia`` adapter (names, ``module.`` prefixes, token order by the
dictionary), loaded strictly into podium's model, and saved as the run's ``latest`` checkpoint,
so ``podium generate RUN`` samples from it. The model's sizes come from the state dict; the head
count is not in it (``--heads``, EMOPIA's 8 by default).

``podium.engine.cli.main`` wires it: ``add_parser(sub)`` in ``build_parser`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from podium.engine.cli.args import positive_int
from podium.engine.errors import PodiumError

DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "profiles" / "emopia-cp.toml"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``import`` command to ``podium``'s sub-parsers."""
    p = subparsers.add_parser(
        "import",
        help="make a run from a released checkpoint (EMOPIA, compound-word transformer)",
        description="Convert a released checkpoint into a podium run that generates.",
    )
    p.add_argument("layout", choices=("emopia",), metavar="LAYOUT", help="emopia")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="the released state dict (.pt)")
    p.add_argument(
        "--dictionary",
        required=True,
        metavar="PKL",
        help="its dictionary.pkl: (event2word, word2event)",
    )
    p.add_argument(
        "--profile",
        default=str(DEFAULT_PROFILE),
        metavar="PROFILE",
        help="profile for the run (default: profiles/emopia-cp.toml); sizes come from the checkpoint",
    )
    p.add_argument(
        "--heads",
        type=positive_int,
        default=8,
        metavar="N",
        help="attention heads of the released model (default 8, EMOPIA's)",
    )
    p.add_argument(
        "--data",
        metavar="PREPARED",
        help="a podium prepare output: the run is then a full run that "
        "`podium resume RUN --max-steps N` fine-tunes on it",
    )
    p.add_argument("--name", metavar="RUN", help="run id (default: <profile>-<time>)")
    p.add_argument(
        "--runs-dir", metavar="DIR", help="where runs live (default: ./runs or $PODIUM_RUNS)"
    )
    return p


def run(args: argparse.Namespace) -> int:
    try:
        run_dir = import_emopia(
            Path(args.checkpoint),
            Path(args.dictionary),
            profile_path=Path(args.profile),
            heads=args.heads,
            name=args.name,
            runs_dir=args.runs_dir,
            data=args.data,
        )
    except PodiumError as exc:
        sys.stderr.write(f"podium: error: {exc}\n")
        return exc.exit_code
    print(f"podium: imported {args.checkpoint} as run {run_dir.name} ({run_dir})")
    print(f"podium: generate from it: podium generate {run_dir.name} --emotion Q1")
    return 0


def import_emopia(
    checkpoint: Path,
    dictionary: Path,
    *,
    profile_path: Path,
    heads: int = 8,
    name: str | None = None,
    runs_dir: str | None = None,
    data: str | None = None,
) -> Path:
    """The new run's directory. Raises DataError/ProfileError/CheckpointError in one line.

    With ``data`` (a prepared directory) the run is made by podium's own session: the imported
    weights replace the fresh ones before step 0, which is saved with the optimizer and schedule
    state a resume needs, so ``podium resume RUN --max-steps N`` fine-tunes. Without it the run
    holds the weights alone (it generates; it has nothing to train on)."""
    import torch

    from podium.engine.checkpoints import Checkpointer
    from podium.engine.config import load_profile
    from podium.engine.errors import CheckpointError
    from podium.engine.families.cp import vocab as V
    from podium.engine.families.cp.emopia import EmopiaAdapter, check_positions, layout_of
    from podium.engine.families.cp.keys import PAIRS
    from podium.engine.runs import create_run, new_info, runs_root

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(f"{checkpoint}: not a loadable state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    layout = layout_of(state)
    overrides = [
        f"model.d_model={layout.d_model}",
        f"model.n_layers={layout.n_layers}",
        f"model.d_ff={layout.d_ff}",
        f"model.n_heads={heads}",
        "model.condition=first",
        "model.key_relative=false",
        "model.bar_positions=0",
        *(f"model.emb_sizes.{f}={n}" for f, n in layout.emb_sizes.items()),
    ]
    if data is not None:
        overrides.append(f"data.path={data}")
    profile = load_profile(profile_path, overrides)
    native = EmopiaAdapter.with_dictionary(dictionary, state).to_native(state)
    info = {"vocab_sizes": V.vocab_sizes(), PAIRS: {}}
    model = profile.family_spec.build_model(profile.model, info)
    model.load_state_dict(native, strict=True)  # raises on any missing or unexpected key
    check_positions(state, model.positions.table)
    root = runs_root(runs_dir)
    if data is not None:
        return _as_session_run(profile, native, root, name)
    run_dir = create_run(root, profile_name=profile.name, name=name)
    run_dir.write_info(
        new_info(run_dir, profile=profile.name, family=profile.family, source=str(profile_path))
    )
    run_dir.profile_path.write_text(
        f"# Imported from {checkpoint} with {dictionary} (podium import emopia).\n"
        + profile.to_toml(),
        encoding="utf-8",
    )
    run_dir.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    Checkpointer(run_dir.checkpoint_dir, profile.checkpoint, profile.hash()).save(
        {
            "model": model.state_dict(),
            "data_info": info,
            "profile_hash": profile.hash(),
            "imported": {
                "layout": "emopia",
                "checkpoint": str(checkpoint),
                "dictionary": str(dictionary),
            },
        },
        step=0,
        epoch=0.0,
        val_loss=None,
        kinds=("manual",),
    )
    return run_dir.path


def _as_session_run(profile: Any, native: dict[str, Any], root: Path, name: str | None) -> Path:
    from podium.engine.session import new_session

    session = new_session(profile, root=root, name=name, max_steps=0)
    model = session.trainer.model
    model.load_state_dict(native, strict=True)  # the bare model (DDP wraps it as trainer.net)
    session.run_training()  # stops at once, "--max-steps 0 reached", saving step 0
    return session.run.path
