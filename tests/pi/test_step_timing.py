"""``bench/step_timing.py --backend lgpio``: refused off a Pi with a clear message, its loopback
pin checked against rig.toml, and the jitter arithmetic it reports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from hal.pins import pi_model

PROJECT_DIR = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT_DIR / "bench" / "step_timing.py"


def load_script():
    spec = importlib.util.spec_from_file_location("step_timing_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True, text=True, cwd=PROJECT_DIR, timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(pi_model() is not None, reason="this machine is a Raspberry Pi")
def test_lgpio_backend_off_a_pi_exits_2_saying_why():
    result = run("--backend", "lgpio")
    assert result.returncode == 2
    assert "--backend lgpio needs a Raspberry Pi" in result.stderr
    assert "--backend software" in result.stderr
    assert result.stdout == ""


def test_loopback_pin_wired_to_the_rig_is_refused_naming_it_and_the_free_pins():
    result = run("--backend", "lgpio", "--loopback-pin", "19")
    assert result.returncode == 2
    assert "BCM 19 is pinch_valve in rig.toml" in result.stderr
    assert "free pins: 4, 7, 8, 9, 10, 11, 14, 15, 25" in result.stderr
    result = run("--backend", "lgpio", "--loopback-pin", "40")
    assert result.returncode == 2
    assert "BCM pins 2 to 27 only" in result.stderr


def test_unknown_backend_is_refused_by_the_parser():
    result = run("--backend", "dma")
    assert result.returncode == 2
    assert "invalid choice: 'dma'" in result.stderr


def test_edge_statistics_measure_interval_error_and_offset_from_the_schedule():
    bench = load_script()
    period_ns = 2_000_000  # 500 steps/s
    perfect = [1_000_000_000 + n * period_ns for n in range(101)]
    stats = bench.edge_statistics(perfect, 500.0)
    assert stats["edges"] == 101
    assert stats["interval_max"] == 0
    assert stats["offset_max"] == 0
    late = list(perfect)
    late[50] += 300_000  # one edge 300 µs late: two intervals off by 300 µs, one offset
    stats = bench.edge_statistics(late, 500.0)
    assert stats["interval_max"] == pytest.approx(300.0)
    assert stats["interval_p50"] == 0
    assert stats["offset_max"] == pytest.approx(300.0)
    with pytest.raises(ValueError, match="at least 2 edges"):
        bench.edge_statistics([5], 500.0)
