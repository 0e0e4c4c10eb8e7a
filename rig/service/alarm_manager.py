"""Alarm manager: raises, latches, acknowledges and silences alarms, and drives buzzer and LED.

Alarm conditions come from the delivery loop (flow monitor, reservoir, battery, watchdog,
switches). An alarm is *active* from the moment its condition appears until the condition has
gone **and** someone has acknowledged it (latching), so a trainee always sees what happened.
Non-latched alarms (a refused bolus) are annunciated once and go to the history.

Signals follow IEC 60601-1-8 as ``rig.common.alarm_signals.SIGNALS`` gives them, highest active
priority wins: high = 10-pulse burst every 5 s and red LED flashing 2.1 Hz; medium =
3-pulse burst every 10 s, yellow flashing 0.6 Hz; low = one 2-pulse burst, cyan steady.
Silencing pauses the sound for at most 2 minutes, then it re-arms; a new alarm of higher
priority sounds at once. Alarms can never be disabled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rig.service.books import RigStore
from rig.therapy.alarms import SIGNALS, AlarmPriority, AlarmSpec, alarm_spec, highest_priority

MAX_SILENCE_S = 120.0
REPEAT_S: dict[AlarmPriority, float | None] = {
    AlarmPriority.HIGH: 5.0,
    AlarmPriority.MEDIUM: 10.0,
    AlarmPriority.LOW: None,
}
TONE_HZ: dict[AlarmPriority, float] = {
    AlarmPriority.HIGH: 880.0,
    AlarmPriority.MEDIUM: 660.0,
    AlarmPriority.LOW: 440.0,
}


class Buzzer(Protocol):
    def burst(
        self, frequency_hz: float, pulses: int, pulse_on_s: float = ..., pulse_off_s: float = ...
    ) -> None: ...

    def silence(self) -> None: ...


class Led(Protocol):
    def show(self, colour: str, flash_hz: float | None = None) -> None: ...


@dataclass
class _Active:
    alarm_id: int
    spec: AlarmSpec
    condition_present: bool


class AlarmManager:
    """Active alarms in memory, mirrored in the store; outputs on the buzzer and the LED."""

    def __init__(
        self,
        store: RigStore,
        buzzer: Buzzer,
        led: Led,
        *,
        on_stop_delivery: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._buzzer = buzzer
        self._led = led
        self._on_stop_delivery = on_stop_delivery
        self._clock = clock
        self._lock = threading.RLock()
        self._active: dict[str, _Active] = {}
        self._silenced_until = 0.0
        self._last_burst_at = -1e9
        self._sounded_priority: AlarmPriority | None = None
        self._led_state: tuple[str, float | None] | None = None
        self.idle_led: tuple[str, float | None] = ("blue", None)
        for row in store.active_alarms():
            # After a restart the conditions are unknown: keep the alarms until acknowledged.
            self._active[row["code"]] = _Active(row["id"], alarm_spec(row["code"]), False)

    # -- conditions ---------------------------------------------------------------------------

    def raise_condition(self, code: str, message: str, *, patient_s: float | None = None) -> bool:
        """Condition *code* is present; raise its alarm if it is not active. True if new."""
        spec = alarm_spec(code)
        with self._lock:
            active = self._active.get(code)
            if active is not None:
                active.condition_present = True
                return False
            alarm_id = self._store.raise_alarm(
                code, spec.priority.value, message, patient_s=patient_s
            )
            if spec.latched:
                self._active[code] = _Active(alarm_id, spec, True)
            else:
                self._store.clear_alarm(alarm_id, patient_s=patient_s)
                self._buzzer.burst(TONE_HZ[spec.priority], spec.signal.burst_pulses)
            self._sounded_priority = None  # a new alarm sounds at once
            if self._silenced_until and spec.priority == AlarmPriority.HIGH:
                self._silenced_until = 0.0
        if spec.stops_delivery:
            self._on_stop_delivery(code)
        return True

    def condition_gone(self, code: str, *, patient_s: float | None = None) -> None:
        """Condition *code* has gone: the alarm clears now if acknowledged, else on ack."""
        with self._lock:
            active = self._active.get(code)
            if active is None:
                return
            active.condition_present = False
            row = self._store_row(active.alarm_id)
            if row is not None and row.get("acknowledged_at_utc"):
                self._clear(code, patient_s=patient_s)

    def _store_row(self, alarm_id: int) -> dict[str, Any] | None:
        for row in self._store.active_alarms():
            if row["id"] == alarm_id:
                return row
        return None

    def _clear(self, code: str, *, role: str | None = None, patient_s: float | None = None) -> None:
        active = self._active.pop(code)
        self._store.clear_alarm(active.alarm_id, role=role, patient_s=patient_s)

    # -- people -------------------------------------------------------------------------------

    def acknowledge(
        self, alarm_id: int | None = None, *, role: str, patient_s: float | None = None
    ) -> list[int]:
        """Acknowledge one alarm (or all when *alarm_id* is None); returns the ids acknowledged.

        Raises KeyError for an id that is not active.
        """
        with self._lock:
            targets = [
                (code, active)
                for code, active in self._active.items()
                if alarm_id is None or active.alarm_id == alarm_id
            ]
            if alarm_id is not None and not targets:
                raise KeyError(alarm_id)
            for code, active in targets:
                self._store.acknowledge_alarm(active.alarm_id, role=role, patient_s=patient_s)
                if not active.condition_present:
                    self._clear(code, role=role, patient_s=patient_s)
            return [active.alarm_id for _, active in targets]

    def silence(
        self, duration_s: float = MAX_SILENCE_S, *, role: str, patient_s: float | None = None
    ) -> float:
        """Pause the sound for *duration_s* (at most 2 min); returns the seconds granted."""
        if not 0 < duration_s <= MAX_SILENCE_S:
            raise ValueError(f"silence duration must be 0 < s <= {MAX_SILENCE_S:g} s")
        with self._lock:
            for active in self._active.values():
                self._store.silence_alarm(
                    active.alarm_id, duration_s, role=role, patient_s=patient_s
                )
            self._silenced_until = self._clock() + duration_s
            self._buzzer.silence()
            return duration_s

    # -- state ----------------------------------------------------------------------------------

    @property
    def active_codes(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def blocks_bolus(self) -> bool:
        with self._lock:
            return any(active.spec.blocks_bolus for active in self._active.values())

    def silence_remaining_s(self) -> float:
        with self._lock:
            return max(0.0, self._silenced_until - self._clock())

    def condition_present(self, code: str) -> bool:
        with self._lock:
            active = self._active.get(code)
            return bool(active and active.condition_present)

    # -- outputs --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Drive buzzer and LED from the highest active priority (call a few times a second)."""
        now = self._clock()
        with self._lock:
            priority = highest_priority(self._active)
            if priority is None:
                self._show(*self.idle_led)
                self._sounded_priority = None
                return
            signal = SIGNALS[priority]
            self._show(signal.led_colour, signal.flash_hz)
            if now < self._silenced_until:
                return
            self._silenced_until = 0.0
            repeat_s = REPEAT_S[priority]
            due = self._sounded_priority != priority or (
                repeat_s is not None and now - self._last_burst_at >= repeat_s
            )
            if due:
                self._buzzer.burst(TONE_HZ[priority], signal.burst_pulses)
                self._last_burst_at = now
                self._sounded_priority = priority

    def _show(self, colour: str, flash_hz: float | None) -> None:
        if self._led_state != (colour, flash_hz):
            self._led.show(colour, flash_hz)
            self._led_state = (colour, flash_hz)
