"""Day schedules of dose rates and times of day: shared by the therapy domain and the kiosk."""

from __future__ import annotations

MINUTES_PER_DAY = 24 * 60


def parse_hhmm(text: str) -> int:
    """``"HH:MM"`` (00:00–23:59) → minutes after midnight; ValueError otherwise."""
    parts = text.split(":")
    if (
        len(parts) != 2
        or not all(len(part) == 2 and part.isdigit() and part.isascii() for part in parts)
        or int(parts[0]) > 23
        or int(parts[1]) > 59
    ):
        raise ValueError(f"{text!r} is not a time of day; allowed HH:MM from 00:00 to 23:59")
    return int(parts[0]) * 60 + int(parts[1])


def format_hhmm(minutes: int) -> str:
    """Minutes after midnight → ``"HH:MM"``."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# A day schedule: (start minute after midnight, dose µg/day) pairs, first at minute 0, ascending.
DaySchedule = list[tuple[int, float]]


def schedule_daily_total_ug(schedule: DaySchedule) -> float:
    """Dose (µg) a day schedule delivers over one whole day."""
    total_ug = 0.0
    for index, (start_min, dose) in enumerate(schedule):
        end_min = schedule[index + 1][0] if index + 1 < len(schedule) else MINUTES_PER_DAY
        total_ug += dose * (end_min - start_min) / MINUTES_PER_DAY
    return total_ug
