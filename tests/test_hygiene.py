"""engine/ never imports the dashboard (podium.tui) or textual: a headless run and a dashboard
run share one engine. Loading a profile imports no torch: checking a profile is instant."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI = ("podium.tui", "textual", "tui")


def _is_ui(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in UI)


def _imports(path: Path) -> list[str]:
    """Every absolute module an engine file imports (relative imports stay inside engine/)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            # "from podium import tui" names the package in the alias
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_the_ui_check_sees_ui_imports():
    assert _is_ui("podium.tui.app") and _is_ui("textual.widgets") and _is_ui("podium.tui")
    assert not _is_ui("podium.engine.trainer") and not _is_ui("podium.tuilike")


def test_no_engine_module_imports_the_ui():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "engine").rglob("*.py"))
        for name in _imports(path)
        if _is_ui(name)
    ]
    assert offenders == []


def _loaded(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_importing_the_engine_loads_no_ui_module():
    code = (
        "import sys, podium.engine.cli.main, podium.engine.session, podium.engine.config,"
        " podium.engine.trainer, podium.engine.store;"
        "print(','.join(sorted(sys.modules)))"
    )
    loaded = _loaded(code)
    assert "podium.engine.session" in loaded  # the check itself ran
    assert [m for m in loaded if _is_ui(m)] == []


def test_loading_a_profile_imports_no_torch():
    code = (
        "import sys; from podium.engine.config import load_profile;"
        "p = load_profile('profiles/demo.toml');"
        "assert p.family == 'cp' and p.section('generate').max_tokens > 0;"
        "print(','.join(sorted(sys.modules)))"
    )
    loaded = _loaded(code)
    assert "podium.engine.families.cp" in loaded  # the family was found...
    heavy = [m for m in loaded if m.split(".")[0] in ("torch", "pretty_midi", "textual")]
    assert heavy == []  # ...without its torch side
