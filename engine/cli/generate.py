"""``podium generate RUN``: a sample from a run's checkpoint, as MIDI (and WAV on request).

    podium generate RUN [--checkpoint latest] [--<conditioning> VALUE ...]
        [--bars N | --tokens N | --seconds S] [--temperature T] [--top-p P] [--seed N] [-o OUT.mid] [--wav]

Works on a live run too (it reads a checkpoint file; training is not disturbed). Same seed, same
MIDI bytes. Conditioning flags belong to the run's family (its sampler's options: the CP family
takes ``--emotion`` and ``--key``): the run is found first, then its flags are read, and a flag
the family does not take is refused with the list of those it does.
"""

from __future__ import annotations

import argparse
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
        epilog="Conditioning flags (--NAME VALUE) come from the run's family's sampler; one the "
        "family does not take is refused with the list of those it takes.",
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--checkpoint", default="latest", metavar="NAME")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--bars", type=positive_int, metavar="N", help="stop after N bars (default 8)"
    )
    length.add_argument("--tokens", type=positive_int, metavar="N", help="stop after N tokens")
    length.add_argument(
        "--seconds", type=_seconds, metavar="S", help="stop after about S seconds of music"
    )
    p.add_argument("--temperature", type=_temperature, metavar="T")
    p.add_argument("--top-p", type=_unit, metavar="P")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("-o", "--out", metavar="OUT.mid", help="default: RUN/samples/<name>.mid")
    p.add_argument("--wav", action="store_true", help="also render a WAV next to the MIDI")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--runs-dir", metavar="DIR")
    return p


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
        generate_from_run,
        render_wav,
        run_profile,
        sampler_of,
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
    print(f"  {analyse(path).line()}")
    if args.wav:
        print(f"  {render_wav(path, path.with_suffix('.wav'))}")
    return 0
