"""The calibration arithmetic against hand-computed values."""

from __future__ import annotations

import pytest

from calibration.analysis import fit_line, flows_ul_per_min, t_95, trumpet, water_density_g_per_ml


def test_water_density_matches_the_tables():
    assert water_density_g_per_ml(20.0) == pytest.approx(0.99821, abs=0.000005)
    assert water_density_g_per_ml(25.0) == pytest.approx(0.99705, abs=0.000005)
    with pytest.raises(ValueError, match=r"0\.\.40"):
        water_density_g_per_ml(80.0)


def test_fit_line_slope_intercept_and_student_t_uncertainty():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [2.1, 3.9, 6.2, 7.8]
    fit = fit_line(x, y)
    # By hand: Sxx = 5, Sxy = 9.7 → slope 1.94, intercept 5 − 1.94·2.5 = 0.15.
    assert fit.slope == pytest.approx(1.94)
    assert fit.intercept == pytest.approx(0.15)
    residuals = [0.01, -0.13, 0.23, -0.11]
    assert fit.residuals == pytest.approx(residuals, abs=1e-9)
    s = (sum(r * r for r in residuals) / 2) ** 0.5
    assert fit.slope_u95 == pytest.approx(4.303 * s / 5**0.5)
    assert t_95(1) == 12.706
    assert t_95(1000) == pytest.approx(1.962, abs=0.001)
    with pytest.raises(ValueError, match="three"):
        fit_line([1.0, 2.0], [1.0, 2.0])


def test_flows_from_mass_differences():
    # 0.05 g in 0.5 min of water at 1 g/mL: 100 µL/min.
    assert flows_ul_per_min([0.0, 0.05, 0.11], 0.5, 1.0) == pytest.approx([100.0, 120.0])


def test_trumpet_windows_by_hand():
    # Flows 100, 110, 90, 100 µL/min at S = 0.5 min against r = 100: errors 0, +10, −10, 0 %.
    masses = [0.0, 0.05, 0.105, 0.15, 0.2]
    analysis = trumpet(
        masses, rate_ul_per_min=100.0, sample_min=0.5, density_g_per_ml=1.0, windows_min=[0.5, 1]
    )
    assert analysis.mean_error_pct == pytest.approx(0.0)
    one, two = analysis.windows
    assert (one.ep_max_pct, one.ep_min_pct) == pytest.approx((10.0, -10.0))
    # Two-sample windows: (0 + 10)/2, (10 − 10)/2, (−10 + 0)/2.
    assert (two.ep_max_pct, two.ep_min_pct) == pytest.approx((5.0, -5.0))
    with pytest.raises(ValueError, match="whole number"):
        trumpet(masses, rate_ul_per_min=100, sample_min=0.5, density_g_per_ml=1, windows_min=[0.7])
    with pytest.raises(ValueError, match="longer"):
        trumpet(masses, rate_ul_per_min=100, sample_min=0.5, density_g_per_ml=1, windows_min=[3])
