"""Build a MIDI folder of real music from music21's corpus, for dev checks of ``podium prepare``.

Writes ``OUT/chorales/<bwv>.mid`` (Bach chorales, as music21 renders them to MIDI), copies the
MIDI test files music21 ships (``OUT/music21-tests/``), and ``OUT/labels.csv`` with file,
emotion, genre, description. music21 is a dev dependency (``pip install 'podium[dev]'``), never a
runtime one. The emotion is a stand-in, not a judgment: the corpus has no emotion labels, so a
major-key piece is labelled Q4 (positive, calm: chorales are slow) and a minor one Q3; the test
files are labelled Q1.

Run::

    .venv/bin/python scripts/music21_folder.py /tmp/m21 --chorales 120 --jobs 2
    podium prepare midi-folder /tmp/m21 --profile profiles/demo.toml --out /tmp/m21.prepared
"""

from __future__ import annotations

import argparse
import csv
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _chorale(args: tuple[str, str]) -> tuple[str, str, str] | None:
    """(file, emotion, title) of one chorale written to MIDI, or None when music21 fails."""
    from music21 import corpus

    src, out_dir = args
    try:
        score = corpus.parse(src)
        mode = score.analyze("key").mode
        name = Path(src).stem.replace(".", "_") + ".mid"
        score.write("midi", fp=str(Path(out_dir) / name))
    except Exception:  # a dev script: a score music21 cannot render is left out
        return None
    title = (score.metadata.title if score.metadata else "") or Path(src).stem
    return f"chorales/{name}", "Q4" if mode == "major" else "Q3", title


def main() -> None:
    import music21
    from music21 import corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--chorales", type=int, default=120, help="how many (of ~430)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    (args.out / "chorales").mkdir(parents=True, exist_ok=True)
    rows = []
    paths = [str(p) for p in corpus.getComposer("bach")[: args.chorales]]
    with ProcessPoolExecutor(args.jobs) as pool:
        for row in pool.map(_chorale, [(p, str(args.out / "chorales")) for p in paths]):
            if row is not None:
                rows.append((row[0], row[1], "chorale", row[2]))
    tests = Path(music21.__file__).parent / "midi" / "testPrimitive"
    (args.out / "music21-tests").mkdir(exist_ok=True)
    for p in sorted(tests.glob("*.mid")):
        shutil.copy(p, args.out / "music21-tests" / p.name)
        rows.append((f"music21-tests/{p.name}", "Q1", "test", f"music21 test file {p.name}"))
    with (args.out / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("file", "emotion", "genre", "description"))
        w.writerows(rows)
    print(f"{len(rows)} MIDI files in {args.out}")


if __name__ == "__main__":
    main()
