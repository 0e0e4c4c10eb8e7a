"""Every screen at 800×480, 1024×600 and 1280×800, each size in its own process
(``itbrig kiosk --screenshot DIR --size WxH`` against one real service): saved whole, and no
label's text larger than its box."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rig.client.launcher import ServiceProcess
from tests.service.conftest import confirm_program, program_json
from tests.ui.conftest import SCREENS_DIR
from ui.nav import nav_for

SIZES = ["800x480", "1024x600", "1280x800"]
pytestmark = pytest.mark.timeout(120)


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return width, height


@pytest.mark.slow(seconds=15)
def test_every_screen_at_every_size_in_its_own_process(tmp_path):
    with ServiceProcess(data_dir=tmp_path / "rig", time_scale=1440) as service:
        from rig.client.http import RigClient

        with RigClient(service.url) as client:
            client.login("clinician", "2222")
            confirm_program(client, program_json("continuous"))
        env = {**os.environ, "SDL_VIDEODRIVER": "offscreen", "KIVY_NO_CONSOLELOG": "1"}
        kiosk = [sys.executable, "-m", "rig.cli", "kiosk", "--url", service.url]
        tours = {
            size: subprocess.Popen(
                [*kiosk, "--screenshot", str(SCREENS_DIR), "--size", size, "--trend-s", "0.2"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for size in SIZES
        }
        outputs = {size: tour.communicate(timeout=90)[0] for size, tour in tours.items()}
    names = [entry.name for entry in nav_for("clinician")] + ["finish"]
    for size, tour in tours.items():
        assert tour.returncode == 0, outputs[size][-2000:]
        width, height = (int(n) for n in size.split("x"))
        for name in names:
            assert png_size(SCREENS_DIR / f"{name}-{size}.png") == (width, height), name
        assert json.loads((SCREENS_DIR / f"overflow-{size}.json").read_text()) == {}
