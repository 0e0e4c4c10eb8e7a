"""Unit conversions against the worked examples of the domain reference."""

from __future__ import annotations

from datetime import datetime

import pytest

from rig.common.schedule import format_hhmm, parse_hhmm
from rig.therapy.units import (
    ceil_after_hours,
    dose_ug,
    dose_ug_per_day,
    floor_to_minute,
    ml_per_day,
    ml_per_day_from_ul_per_h,
    rate_ul_per_h,
    volume_ul,
    weekday_name,
)


@pytest.mark.parametrize(
    ("dose", "concentration", "expected_ml_per_day", "expected_ul_per_h"),
    [(300, 500, 0.600, 25.0), (300, 2000, 0.150, 6.25), (800, 1000, 0.8, 800 / 24)],
)
def test_daily_dose_to_volume_rates(dose, concentration, expected_ml_per_day, expected_ul_per_h):
    assert ml_per_day(dose, concentration) == pytest.approx(expected_ml_per_day)
    assert rate_ul_per_h(dose, concentration) == pytest.approx(expected_ul_per_h)
    assert ml_per_day_from_ul_per_h(expected_ul_per_h) == pytest.approx(expected_ml_per_day)
    assert dose_ug_per_day(expected_ul_per_h, concentration) == pytest.approx(dose)


def test_bolus_volume_and_back():
    assert volume_ul(50, 500) == pytest.approx(100.0)
    assert dose_ug(100.0, 500) == pytest.approx(50.0)


@pytest.mark.parametrize(("text", "minutes"), [("00:00", 0), ("07:30", 450), ("23:59", 1439)])
def test_time_of_day(text, minutes):
    assert parse_hhmm(text) == minutes
    assert format_hhmm(minutes) == text


@pytest.mark.parametrize(
    "text", ["24:00", "12:60", "7:30", "07:3", "ab:cd", "", "07:30:00", "-1:00"]
)
def test_time_of_day_rejects(text):
    with pytest.raises(ValueError, match="00:00 to 23:59"):
        parse_hhmm(text)


def test_calendar_helpers():
    moment = datetime(2025, 1, 6, 8, 30, 59, 999_999)
    assert floor_to_minute(moment) == datetime(2025, 1, 6, 8, 30)
    assert weekday_name(moment) == "mon"
    assert ceil_after_hours(datetime(2025, 1, 1), 1e-10) == datetime(2025, 1, 1, 0, 0, 0, 1)
