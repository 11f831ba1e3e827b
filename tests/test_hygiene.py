"""engine/ never imports tui/ or textual: a headless run and a dashboard run share one engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_engine_module_imports_the_ui():
    offenders = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in names
                if n.split(".")[0] in ("tui", "textual")
            ]
    assert offenders == []


def test_importing_the_engine_loads_no_ui_module():
    code = (
        "import sys, engine.cli, engine.session, engine.config, engine.trainer, engine.store;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tui', 'textual'));"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == ""
