"""Volume calibration and the accuracy test on the simulated bench under a virtual clock."""

from __future__ import annotations

import pytest

from calibration.accuracy import AccuracyParams, run_accuracy
from calibration.fast import simulated_bench
from calibration.volume import VolumeParams, run_volume
from rig.common.inputs import InputError
from rig.service.config import load_config
from tests.calibration.conftest import TRUE_RATIO

SHORT_RUN = {"sample_min": 0.5, "duration_min": 16.0, "startup_min": 6.0, "windows_min": [2, 5]}
"""A shortened accuracy run for tests (bench/calibration.py measures the full 120 min)."""


def test_volume_calibration_finds_the_true_bore(wide_bore):
    with simulated_bench(wide_bore) as cb:
        result = run_volume(cb, VolumeParams())
    assert result.ul_per_step_nominal == pytest.approx(wide_bore.ul_per_microstep)
    assert result.coefficient == pytest.approx(TRUE_RATIO, rel=0.003)
    assert result.coefficient_u95 < 0.003
    assert len(result.residuals_ul) == 5
    assert max(abs(r) for r in result.residuals_ul) < 0.1
    assert result.evaporation_mg_per_h == pytest.approx(10.0, rel=0.5)


def test_without_priming_the_intercept_holds_the_backlash(wide_bore):
    with simulated_bench(wide_bore) as cb:
        result = run_volume(cb, VolumeParams(prime_ul=0.0, blank_s=0.0))
    backlash_ul = 0.02 * wide_bore.drive.microsteps_per_mm * result.ul_per_step_measured
    assert result.intercept_ul == pytest.approx(-backlash_ul, abs=0.3)
    assert result.coefficient == pytest.approx(TRUE_RATIO, rel=0.003)


def test_a_nominal_bench_calibrates_to_one():
    with simulated_bench(load_config()) as cb:
        result = run_volume(cb, VolumeParams(blank_s=0.0))
    assert result.coefficient == pytest.approx(1.0, abs=0.003)


def test_accuracy_before_and_after_applying_the_volume_calibration(wide_bore):
    with simulated_bench(wide_bore) as cb:
        measured = run_volume(cb, VolumeParams(blank_s=0.0)).ul_per_step_measured
    params = AccuracyParams(rate_ul_per_min=120.0, **SHORT_RUN)
    with simulated_bench(wide_bore) as cb:
        before = run_accuracy(cb, params)
    with simulated_bench(wide_bore, ul_per_step=measured) as cb:
        after = run_accuracy(cb, params)
    # The blank after the run finds the beaker's evaporation and adds it back to the readings.
    assert before.evaporation_mg_per_h == pytest.approx(10.0, rel=0.3)
    assert before.mean_error_pct == pytest.approx(3.02, abs=0.1)
    assert abs(after.mean_error_pct) <= 0.5
    assert len(before.samples) == 33
    assert before.samples[0].t_min == 0 and before.samples[-1].t_min == 16.0
    assert [w.window_min for w in after.windows] == [2, 5]
    for window in after.windows:
        assert window.ep_min_pct <= after.mean_error_pct <= window.ep_max_pct
    # The start-up curve: the line fills first, then the flow settles at the set rate.
    assert before.flows[0].flow_ul_per_min < before.flows[-1].flow_ul_per_min


def test_a_run_longer_than_the_syringe_is_refused_before_it_starts(wide_bore):
    with simulated_bench(wide_bore) as cb:
        with pytest.raises(InputError, match=r"needs 120\.00 mL and the syringe holds 20\.00 mL"):
            run_accuracy(cb, AccuracyParams(rate_ul_per_min=1000.0))
        assert cb.steps_issued == 0
