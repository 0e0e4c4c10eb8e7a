"""The layers stay one-way: import-linter's contracts (pyproject.toml) hold, and nothing under
``rig/`` or ``hal/`` imports the kiosk."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    contracts = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["tool"]["importlinter"]
    kept = f"Contracts: {len(contracts['contracts'])} kept, 0 broken."
    assert kept in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


def test_no_module_under_rig_or_hal_imports_the_kiosk():
    offenders = []
    for folder in ("rig", "hal"):
        for path in sorted((PROJECT_DIR / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path}: {name}" for name in names if name.split(".")[0] == "ui"]
    assert offenders == []
