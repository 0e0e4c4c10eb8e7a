"""The Pi's systemd units pass ``systemd-analyze verify`` and install.sh passes ``shellcheck``.

Both tools are installed by ``./install.sh --test`` (Debian packages ``systemd`` and
``shellcheck``); a test is skipped only where its tool is missing.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
UNITS = sorted(path.name for path in (PROJECT_DIR / "systemd").glob("*.service"))


def render(unit: str, directory: Path) -> Path:
    """The unit as install.sh installs it, for this checkout and user."""
    text = (PROJECT_DIR / "systemd" / unit).read_text()
    for placeholder, value in {
        "@VENV@": str(PROJECT_DIR / ".venv"),
        "@PROJECT@": str(PROJECT_DIR),
        "@USER@": getpass.getuser(),
        "@UID@": str(os.getuid()),
    }.items():
        text = text.replace(placeholder, value)
    path = directory / unit
    path.write_text(text)
    return path


def verify_problems(paths: list[Path]) -> list[str]:
    """What ``systemd-analyze verify`` says about these units (lines naming them, or failure)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (./install.sh --test installs systemd)")
    result = subprocess.run(
        [tool, "verify", *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    said = (result.stdout + result.stderr).splitlines()
    problems = [line for line in said if any(path.name in line for path in paths)]
    if result.returncode != 0:
        problems.append(f"exit code {result.returncode}: {said}")
    return problems


def test_there_are_units_to_verify():
    assert UNITS == ["itbrig-kiosk.service", "itbrig.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    assert verify_problems([render(unit, tmp_path)]) == []


def test_both_units_verify_together(tmp_path):
    assert verify_problems([render(unit, tmp_path) for unit in UNITS]) == []


def test_verify_would_catch_a_broken_unit(tmp_path):
    path = render("itbrig-kiosk.service", tmp_path)
    path.write_text(path.read_text().replace("Restart=always", "Restart=sometimes"))
    problems = verify_problems([path])
    assert any("Failed to parse service restart specifier" in line for line in problems)
    missing = render("itbrig.service", tmp_path)
    missing.write_text(missing.read_text().replace(str(PROJECT_DIR / ".venv"), "/nonexistent"))
    assert any("is not executable" in line for line in verify_problems([missing]))


def shellcheck(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (./install.sh --test installs it)")
    return subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)


def test_install_sh_passes_shellcheck():
    result = shellcheck(PROJECT_DIR / "install.sh")
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_shellcheck_would_catch_a_problem(tmp_path):
    script = tmp_path / "bad.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    result = shellcheck(script)
    assert result.returncode != 0 and "SC2086" in result.stdout
