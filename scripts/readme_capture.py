"""Make the README's run-screen capture from the real program, so it cannot drift from it.

Trains the demo profile (profiles/demo.toml, unchanged) for ``MAX_STEPS`` steps in the real
dashboard, ``PodiumApp`` and its run screen driven by Textual's Pilot at 120x40, and writes the
screen's characters once the run has ended into README.md between the capture markers.

    .venv/bin/python scripts/readme_capture.py           # train (a few minutes), rewrite the block
    .venv/bin/python scripts/readme_capture.py --check   # the block has the shape this run makes

``--check`` trains nothing (the suite runs it): the block is there, fills the 120x40 screen, and
its header shows this script's run of the demo profile (``step MAX_STEPS/MAX_STEPS``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = ROOT / "profiles" / "demo.toml"
SIZE = (120, 40)
MAX_STEPS = 150
"""Three validations (every 50 steps) and their checkpoints: a curve worth looking at, in minutes."""
COMMAND = f"podium train profiles/demo.toml --max-steps {MAX_STEPS}"
BEGIN = "<!-- capture: scripts/readme_capture.py -->"
END = "<!-- /capture -->"


def screen_text(app) -> str:
    """The screen's characters as ``export_screenshot`` renders them, without styles."""
    from rich.console import Console

    app.export_screenshot()  # brings every widget up to date
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(app.screen._compositor.render_update(full=True))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


async def capture(root: Path, timeout: float = 1800.0) -> str:
    """Train the demo run in the dashboard and return its run screen after the last step."""
    from podium.tui.app import PodiumApp
    from podium.tui.live import StartRequest

    request = StartRequest(
        profile_path=DEMO, overrides=(), root=root, name="demo", max_steps=MAX_STEPS
    )
    app = PodiumApp(root=root, request=request, profile_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + timeout
        while not app.live_runs or app.training:
            if time.monotonic() > deadline:
                raise SystemExit(f"readme_capture: the run did not end in {timeout:.0f} s")
            await pilot.pause(0.5)
        live = next(iter(app.live_runs.values()))
        if live.error or live.result is None or live.result.step != MAX_STEPS:
            raise SystemExit(f"readme_capture: the run failed: {live.error or live.result}")
        await pilot.pause(2.0)  # the last events and the store's final reads reach the screen
        return screen_text(app)


def block(readme: str) -> tuple[int, int]:
    """Where the capture's lines sit in ``readme`` (the fenced lines between the markers)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"readme_capture: {README.name} has no {BEGIN} ... {END} block")
    first = readme.index("```\n", start) + 4
    last = readme.rindex("```", first, end)
    return first, last


def problems(text: str) -> list[str]:
    """What makes ``text`` not a capture of this script's run (empty: it is one)."""
    lines = text.rstrip("\n").split("\n")
    found = []
    if len(lines) != SIZE[1]:
        found.append(f"{len(lines)} lines, the screen has {SIZE[1]}")
    wide = [i + 1 for i, line in enumerate(lines) if len(line) > SIZE[0]]
    if wide:
        found.append(f"lines {wide} are wider than {SIZE[0]} columns")
    header = lines[0] if lines else ""
    if not re.search(rf"\bdemo \(cp\).*\bstep {MAX_STEPS}/{MAX_STEPS}\b", header):
        found.append(f"the header is not the demo run at step {MAX_STEPS}/{MAX_STEPS}: {header!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="check README.md's capture instead of making one"
    )
    args = parser.parse_args(argv)
    readme = README.read_text(encoding="utf-8")
    first, last = block(readme)
    if args.check:
        found = problems(readme[first:last])
        for problem in found:
            print(f"readme_capture: README.md's capture: {problem}", file=sys.stderr)
        return 1 if found else 0
    with tempfile.TemporaryDirectory(prefix="podium-capture-") as tmp:
        text = asyncio.run(capture(Path(tmp) / "runs"))
    found = problems(text)
    if found:
        raise SystemExit(f"readme_capture: unexpected screen ({'; '.join(found)}):\n{text}")
    README.write_text(readme[:first] + text + "\n" + readme[last:], encoding="utf-8")
    print(f"readme_capture: wrote the run screen of `{COMMAND}` into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
