"""A simulated bench with something to find: a bore 1.5 % wide, backlash and evaporation."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.service.config import load_config

WIDE_BORE_TOML = """
[sim]
actual_inner_diameter_mm = 19.41695   # 19.13 mm nominal, 1.5 % wider: 3.02 % more per step
backlash_mm = 0.02
balance_evaporation_mg_per_h = 10.0
seed = 7
"""
TRUE_RATIO = 1.015**2


@pytest.fixture
def wide_bore_file(tmp_path: Path) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text(WIDE_BORE_TOML)
    return path


@pytest.fixture
def wide_bore(wide_bore_file: Path):
    return load_config(wide_bore_file)
