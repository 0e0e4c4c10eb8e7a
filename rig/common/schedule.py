"""Day schedules of dose rates: shared by the therapy domain and the kiosk's live totals."""

from __future__ import annotations

MINUTES_PER_DAY = 24 * 60

# A day schedule: (start minute after midnight, dose µg/day) pairs, first at minute 0, ascending.
DaySchedule = list[tuple[int, float]]


def schedule_daily_total_ug(schedule: DaySchedule) -> float:
    """Dose (µg) a day schedule delivers over one whole day."""
    total_ug = 0.0
    for index, (start_min, dose) in enumerate(schedule):
        end_min = schedule[index + 1][0] if index + 1 < len(schedule) else MINUTES_PER_DAY
        total_ug += dose * (end_min - start_min) / MINUTES_PER_DAY
    return total_ug
