"""IEC 60601-1-8 alarm priorities and how each sounds and shows: the vocabulary that the alarm
catalogue, the buzzer and LED, and the kiosk banner share."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AlarmPriority(StrEnum):
    """IEC 60601-1-8 alarm priority."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """3 for high, 2 for medium, 1 for low: the highest active priority wins."""
        return {"high": 3, "medium": 2, "low": 1}[self.value]


@dataclass(frozen=True)
class AlarmSignal:
    """How a priority sounds and shows (buzzer bursts, LED colour and flash rate)."""

    priority: AlarmPriority
    burst_pulses_min: int
    burst_pulses_max: int
    repeat_s_min: float | None
    repeat_s_max: float | None
    pulse_hz_min: float
    pulse_hz_max: float
    led_colour: str
    flash_hz_min: float | None
    flash_hz_max: float | None
    implant_tone: str

    @property
    def flashing(self) -> bool:
        return self.flash_hz_min is not None

    @property
    def flash_hz(self) -> float | None:
        """The flash rate the rig uses: the middle of the allowed range (None: steady)."""
        if self.flash_hz_min is None or self.flash_hz_max is None:
            return None
        return round((self.flash_hz_min + self.flash_hz_max) / 2, 2)

    @property
    def burst_pulses(self) -> int:
        """Pulses in each burst the rig sounds."""
        return self.burst_pulses_max


SIGNALS: dict[AlarmPriority, AlarmSignal] = {
    AlarmPriority.HIGH: AlarmSignal(
        AlarmPriority.HIGH, 10, 10, 2.5, 15.0, 150.0, 1000.0, "red", 1.4, 2.8, "two_tone_3s"
    ),
    AlarmPriority.MEDIUM: AlarmSignal(
        AlarmPriority.MEDIUM, 3, 3, 2.5, 30.0, 150.0, 1000.0, "yellow", 0.4, 0.8, "single_tone_1s"
    ),
    AlarmPriority.LOW: AlarmSignal(
        AlarmPriority.LOW, 1, 2, None, None, 150.0, 1000.0, "cyan", None, None, "single_tone_1s"
    ),
}
