"""The wheel installs one import package, ``podium``, holding every package of engine/ and tui/.

Packages are listed explicitly in pyproject.toml (setuptools package-dir maps ``podium.engine``
to engine/ and ``podium.tui`` to tui/), so a new sub-package that is not listed would silently be
left out of ``pip install .``: this builds the wheel and compares it with the tree.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree_packages() -> set[str]:
    out = {"podium"}
    for top in ("engine", "tui"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            out.add(".".join(("podium", *rel)))
    return out


def test_wheel_holds_only_podium_and_every_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("podium-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"podium"}
    packaged = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("__init__.py")}
    assert packaged == _tree_packages()
    assert "podium/tui/podium.tcss" in names
    assert "podium/__main__.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "podium = podium.tui.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_python_dash_m_podium_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "podium", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "usage: podium" in out.stdout
