"""``podium generate RUN``: a sample from a run's checkpoint, as MIDI (and WAV on request).

    podium generate RUN [--checkpoint latest] [--<conditioning> VALUE ...]
        [--bars N | --tokens N | --seconds S] [--temperature T] [--top-p P] [--seed N] [-o OUT.mid] [--wav]

Works on a live run too (it reads a checkpoint file; training is not disturbed). Same checkpoint
and seed, same MIDI bytes; ``latest`` moves while a run trains, so every sample says which
checkpoint and step it came from, on the console and in its JSON sidecar (``OUT.json``). Conditioning flags belong to the run's family (its sampler's options: the CP family
takes ``--emotion`` and ``--key``): the run is found first, then its flags are read, and a flag
the family does not take is refused with the list of those it does.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from podium.engine.cli.args import float_where, positive_int
from podium.engine.errors import PodiumError

_unit = float_where(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]")
_temperature = float_where(lambda v: 0.0 <= v <= 10.0, "must be between 0 (greedy) and 10")
_seconds = float_where(lambda v: 0.0 < v <= 3600.0, "must be in (0, 3600]", "a number of seconds")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate",
        help="sample a piece from a run's checkpoint (MIDI)",
        description=textwrap.fill(
            "Sample a piece from a run's checkpoint as MIDI, with its metadata (which checkpoint "
            "and step, the conditioning asked and drawn, what ended it) in a JSON file beside "
            "it. Same checkpoint, same seed: same MIDI bytes.",
            78,
        ),
        epilog=family_flags_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run id under the runs root, or a run directory")
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="NAME",
        help="which checkpoint: latest (default), best, or a name from podium checkpoints RUN; "
        "latest moves while a run trains, so the output names the step it came from",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--bars", type=positive_int, metavar="N", help="stop after N bars (default 8)"
    )
    length.add_argument(
        "--tokens", type=positive_int, metavar="N", help="stop after N tokens (no bar limit)"
    )
    length.add_argument(
        "--seconds", type=_seconds, metavar="S", help="stop after about S seconds of music"
    )
    p.add_argument(
        "--temperature",
        type=_temperature,
        metavar="T",
        help="sampling temperature for every head, 0 (greedy) to 10 (default: the profile's "
        "[generate] table)",
    )
    p.add_argument(
        "--top-p",
        type=_unit,
        metavar="P",
        help="nucleus mass for every head, in (0, 1]; 1 samples the whole distribution "
        "(default: the profile's [generate] table)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="random seed of the sample and of any conditioning left blank (default 0)",
    )
    p.add_argument(
        "-o",
        "--out",
        metavar="OUT.mid",
        help="where to write the MIDI (default: RUN/samples/<name>.mid); its metadata goes to "
        "OUT.json",
    )
    p.add_argument("--wav", action="store_true", help="also render a WAV next to the MIDI")
    p.add_argument(
        "--device", default="cpu", help="where to run the model: cpu (default), cuda or cuda:N"
    )
    p.add_argument("--runs-dir", metavar="DIR", help="runs root (default: $PODIUM_RUNS or ./runs)")
    return p


def family_flags_epilog() -> str:
    """The conditioning flags of podium's own families, for ``--help``: they are read once the
    run (and so its family) is known, so argparse cannot list them itself."""
    from podium.engine.errors import ProfileError
    from podium.engine.families.registry import builtin_names, get_family

    lines = ["conditioning flags (--NAME VALUE), from the run's family's sampler:"]
    for name in builtin_names():
        try:
            sampler = get_family(name).sampler
        except ProfileError:
            continue
        if sampler is None:
            continue
        for option in sampler.options:
            flag = f"  {option.flag} VALUE"
            lines += textwrap.wrap(
                f"{name}: {option.help}",
                78,
                initial_indent=f"{flag:<24}",
                subsequent_indent=" " * 24,
            )
    lines += textwrap.wrap(
        "A family named by a module path brings its own; a flag the run's family does not take "
        "is refused with the list of those it takes.",
        78,
    )
    return "\n".join(lines)


def conditioning_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``--name VALUE`` / ``--name=VALUE`` pairs that are not generic flags off ``argv``:
    they are the run family's conditioning, read once the run is known."""
    rest: list[str] = []
    found: dict[str, str] = {}
    i = 0
    while i < len(argv):
        item = argv[i]
        name, eq, value = item.partition("=")
        if item.startswith("--") and name not in GENERIC_FLAGS and name != "--help":
            if not eq:
                if i + 1 >= len(argv):
                    raise PodiumError(f"{item}: expected a value")
                value = argv[i + 1]
                i += 1
            found[name[2:].replace("-", "_")] = value
        else:
            rest.append(item)
        i += 1
    return rest, found


GENERIC_FLAGS = (
    "--checkpoint", "--bars", "--tokens", "--seconds", "--temperature", "--top-p", "--seed",
    "--out", "-o", "--wav", "--device", "--runs-dir",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from podium.engine.families.registry import SampleRequest
    from podium.engine.generate import (
        check_request,
        conditioning_words,
        generate_from_run,
        meta_path,
        render_wav,
        run_profile,
        sampler_of,
        source_words,
        tokens_per_second,
    )
    from podium.engine.music_stats import analyse
    from podium.engine.runs import resolve_run, runs_root

    if args.out is not None and not args.out.endswith((".mid", ".midi")):
        raise PodiumError(f"-o {args.out}: the output must be a .mid file")
    run_dir = resolve_run(args.run, runs_root(args.runs_dir))
    profile = run_profile(run_dir.path)
    sampler = sampler_of(profile.family_spec)
    conditioning = check_request(sampler, args.conditioning, profile.family)  # before loading
    request = SampleRequest(
        conditioning=conditioning,
        bars=None if args.tokens is not None or args.seconds is not None else (args.bars or 8),
        tokens=args.tokens,
        seconds=args.seconds,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    out = Path(args.out) if args.out else None
    sample, path = generate_from_run(
        run_dir.path, args.checkpoint, request, out=out, device=args.device
    )
    used = ", ".join(v for v in sample.conditioning.values() if v)
    print(
        f"podium: {path} ({used + ', ' if used else ''}{len(sample.tokens)} tokens, ended by "
        f"{sample.ended}, {tokens_per_second(sample):.0f} tokens/s)"
    )
    stats = analyse(path)
    asked = conditioning_words(sample.conditioning, sample.drawn, stats.key)
    print(f"  from {source_words(sample.checkpoint, sample.step)} · seed {sample.seed} · {asked}")
    if sample.note:
        print(f"  {sample.note}")
    print(f"  {stats.line()}")
    print(f"  metadata: {meta_path(path)}")
    if args.wav:
        print(f"  {render_wav(path, path.with_suffix('.wav'))}")
    return 0
