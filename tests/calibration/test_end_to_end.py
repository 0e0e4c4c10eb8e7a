"""End to end: ``itbrig calibrate volume`` (a real CLI process) against a real rig service
process on loopback, calibrating its simulated bench in real time, with the report fetched."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.calibration.conftest import TRUE_RATIO
from tests.service.conftest import service_factory  # noqa: F401 (fixture)

QUICK = ["--volumes-ul", "15,30,60", "--settle-s", "1.5", "--blank-s", "0", "--prime-ul", "20"]


@pytest.mark.slow(seconds=18)
def test_calibrate_volume_on_the_running_service(service_factory, wide_bore_file, tmp_path):  # noqa: F811
    service = service_factory(extra_args=["--config", str(wide_bore_file)])
    service.start()
    command = [sys.executable, "-m", "rig.cli", "calibrate", "volume", "--url", service.url]
    command += ["--pin", "3333", "--json", "--rate-ul-per-min", "1000", *QUICK]
    command += ["--report", str(tmp_path / "record")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # Real time, short settling: looser than the virtual-clock tests, tight enough to see the bore.
    assert result["coefficient"] == pytest.approx(TRUE_RATIO, rel=0.01)
    assert (tmp_path / "record" / "report.pdf").read_bytes().startswith(b"%PDF")
    runs = service.client.get("/api/calibration/runs")
    assert [(r["procedure"], r["state"], r["role"]) for r in runs] == [
        ("volume", "done", "engineer")
    ]
