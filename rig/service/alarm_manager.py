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

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from rig.service.books import AlarmStateError, EventKind, RigStore, StorageError, iso_utc, utc_now
from rig.service.records import PendingRecords
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


def annunciate(buzzer: Buzzer, led: Led, priority: AlarmPriority) -> None:
    """One burst and the LED of *priority*: an alarm shown and sounded with no books at all."""
    signal = SIGNALS[priority]
    led.show(signal.led_colour, signal.flash_hz)
    buzzer.burst(TONE_HZ[priority], signal.burst_pulses)


class Buzzer(Protocol):
    def burst(
        self, frequency_hz: float, pulses: int, pulse_on_s: float = ..., pulse_off_s: float = ...
    ) -> None: ...

    def silence(self) -> None: ...


class Led(Protocol):
    def show(self, colour: str, flash_hz: float | None = None) -> None: ...


@dataclass
class _Active:
    """An active alarm as the manager knows it, on the books or not (yet)."""

    spec: AlarmSpec
    condition_present: bool
    message: str
    raised_at_utc: str
    alarm_id: int | None = None
    """The books' id; None while the books could not be written."""
    acknowledged: bool = False
    detail: str = ""
    """What the bench measured (bench units), for the engineer; the message is clinical."""
    raised_patient_time: str | None = None
    rechecking: bool = False
    """Acknowledged with its condition unresolved, delivery restarted to judge it again: it
    clears once the condition is judged gone, and is raised anew if it is judged present."""


@dataclass(frozen=True)
class AlarmCheckpoint:
    """The manager's state before a change that may yet be rolled back."""

    active: dict[str, _Active]
    silenced_until: float
    sounded_priority: AlarmPriority | None
    last_burst_at: float


def raise_storage_pending() -> None:
    raise StorageError(
        "cannot record this: earlier alarms are still waiting to be written to the books",
        kind="pending",
    )


class AlarmManager:
    """Active alarms in memory, mirrored in the books; outputs on the buzzer and the LED.

    Fail safe before writing: a new alarm that stops delivery stops it first, then sounds and
    shows, and only then is recorded; when the books cannot be written the record waits in
    *records* (:class:`PendingRecords`) and the alarm is annunciated all the same.
    """

    def __init__(
        self,
        store: RigStore,
        buzzer: Buzzer,
        led: Led,
        *,
        on_stop_delivery: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        records: PendingRecords | None = None,
        patient_epoch: datetime | None = None,
    ) -> None:
        self._store = store
        self._buzzer = buzzer
        self._led = led
        self._on_stop_delivery = on_stop_delivery
        self._clock = clock
        self._patient_epoch = patient_epoch
        self.records = records if records is not None else PendingRecords(store)
        self._lock = threading.RLock()
        self._active: dict[str, _Active] = {}
        self._silenced_until = 0.0
        self._last_burst_at = -1e9
        self._sounded_priority: AlarmPriority | None = None
        self._led_state: tuple[str, float | None] | None = None
        self.idle_led: tuple[str, float | None] = ("blue", None)
        for row in store.active_alarms():
            # After a restart the conditions are unknown: keep the alarms until acknowledged.
            self._active[row["code"]] = _Active(
                alarm_spec(row["code"]),
                False,
                row["message"],
                row["raised_at_utc"],
                alarm_id=row["id"],
                acknowledged=row["acknowledged_at_utc"] is not None,
            )

    # -- conditions ---------------------------------------------------------------------------

    def raise_condition(
        self, code: str, message: str, *, patient_s: float | None = None, detail: str = ""
    ) -> bool:
        """Condition *code* is present; raise its alarm if it is not active. True if new.

        In this order: delivery stopped (if the alarm stops it), alarm sounded and shown, alarm
        recorded (or kept to record once the books can be written). An alarm being re-checked
        (:meth:`recheck_on_start`) whose condition is still there is cleared and raised anew.
        """
        spec = alarm_spec(code)
        with self._lock:
            active = self._active.get(code)
            if active is not None and not active.rechecking:
                active.condition_present = True
                return False
            if active is not None:  # restarted to re-check it, and it is still there
                del self._active[code]
                self.records.write(
                    f"record the {code} alarm re-raised",
                    lambda: self._book_clear(active, None, patient_s),
                )
        if spec.stops_delivery:
            self._on_stop_delivery(code)
        entry = _Active(
            spec,
            True,
            message,
            iso_utc(utc_now()),
            detail=detail,
            raised_patient_time=self._patient_time(patient_s),
        )
        with self._lock:
            if code in self._active:  # raised by another thread meanwhile
                self._active[code].condition_present = True
                return False
            if spec.latched:
                self._active[code] = entry
            else:
                self._buzzer.burst(TONE_HZ[spec.priority], spec.signal.burst_pulses)
            self._sounded_priority = None  # a new alarm sounds at once
            if self._silenced_until and spec.priority == AlarmPriority.HIGH:
                self._silenced_until = 0.0
        self.tick()
        self.records.write(f"record the {code} alarm", lambda: self._book_raise(entry, patient_s))
        return True

    def _patient_time(self, patient_s: float | None) -> str | None:
        if self._patient_epoch is None or patient_s is None:
            return None
        return (self._patient_epoch + timedelta(seconds=patient_s)).isoformat()

    def recheck_on_start(self, codes: frozenset[str]) -> list[str]:
        """Delivery starts: acknowledged alarms among *codes* whose condition a stopped motor
        could not judge are re-checked by running (returned); an unacknowledged one refuses the
        start (ValueError naming it)."""
        with self._lock:
            held = [
                (code, active)
                for code, active in self._active.items()
                if code in codes and active.condition_present
            ]
            waiting = [code for code, active in held if not active.acknowledged]
            if waiting:
                raise ValueError(
                    f"state: acknowledge these alarms first: {', '.join(waiting)} (starting "
                    "delivery then re-checks them)"
                )
            for _code, active in held:
                active.rechecking = True
            return [code for code, _active in held]

    def _book_raise(self, entry: _Active, patient_s: float | None) -> None:
        code = entry.spec.code.value
        with self._store.transaction(f"record the {code} alarm"):
            alarm_id = self._store.raise_alarm(
                code, entry.spec.priority.value, entry.message, patient_s=patient_s
            )
            if not entry.spec.latched:
                self._store.clear_alarm(alarm_id, patient_s=patient_s)
        entry.alarm_id = alarm_id

    def condition_gone(self, code: str, *, patient_s: float | None = None) -> None:
        """Condition *code* has gone: the alarm clears now if acknowledged, else on ack."""
        with self._lock:
            active = self._active.get(code)
            if active is None:
                return
            active.condition_present = False
            if not active.acknowledged:
                return
            del self._active[code]
        self.records.write(
            f"record the {code} alarm cleared", lambda: self._book_clear(active, None, patient_s)
        )

    def _book_clear(self, entry: _Active, role: str | None, patient_s: float | None) -> None:
        if entry.alarm_id is None:  # its raise could not be kept: nothing to clear
            return
        with contextlib.suppress(AlarmStateError):  # already cleared (a retried write)
            self._store.clear_alarm(entry.alarm_id, role=role, patient_s=patient_s)

    # -- people -------------------------------------------------------------------------------

    def acknowledge(
        self, alarm_id: int | None = None, *, role: str, patient_s: float | None = None
    ) -> list[int]:
        """Acknowledge one alarm (or all when *alarm_id* is None); returns the ids acknowledged.

        Written first (one transaction), applied once written. Raises KeyError for an id that is
        not active, StorageError when the books cannot take it (nothing is then applied).
        """
        with self._lock:
            targets = [
                (code, active)
                for code, active in self._active.items()
                if alarm_id is None or (active.alarm_id == alarm_id and alarm_id is not None)
            ]
            if alarm_id is not None and not targets:
                raise KeyError(alarm_id)
            self._require_on_books([active for _code, active in targets])
            with self._store.transaction("record the acknowledgement"):
                for _code, active in targets:
                    assert active.alarm_id is not None
                    self._store.acknowledge_alarm(active.alarm_id, role=role, patient_s=patient_s)
                    if not active.condition_present:
                        self._store.clear_alarm(active.alarm_id, role=role, patient_s=patient_s)
            for code, active in targets:
                active.acknowledged = True
                if not active.condition_present:
                    del self._active[code]
            return [active.alarm_id for _, active in targets if active.alarm_id is not None]

    def _require_on_books(self, entries: list[_Active]) -> None:
        """Alarms not yet on the books get there first (StorageError if they cannot)."""
        if any(entry.alarm_id is None for entry in entries) and not self.records.flush():
            raise_storage_pending()

    def silence(
        self, duration_s: float = MAX_SILENCE_S, *, role: str, patient_s: float | None = None
    ) -> float:
        """Pause the sound for *duration_s* (at most 2 min); returns the seconds granted.

        Written first, applied once written (StorageError: nothing applied)."""
        if not 0 < duration_s <= MAX_SILENCE_S:
            raise ValueError(f"silence duration must be 0 < s <= {MAX_SILENCE_S:g} s")
        with self._lock:
            actives = list(self._active.values())
            self._require_on_books(actives)
            with self._store.transaction("record the silence"):
                for active in actives:
                    assert active.alarm_id is not None
                    self._store.silence_alarm(
                        active.alarm_id, duration_s, role=role, patient_s=patient_s
                    )
            self._silenced_until = self._clock() + duration_s
            self._buzzer.silence()
            return duration_s

    def silence_while_unwritable(
        self, duration_s: float, *, role: str, patient_s: float | None = None
    ) -> float:
        """Pause the sound though the books cannot be written: a pause hides no alarm (each
        stays shown and a new high one sounds at once), so it is applied and its record waits
        for the books like every other record meanwhile."""
        if not 0 < duration_s <= MAX_SILENCE_S:
            raise ValueError(f"silence duration must be 0 < s <= {MAX_SILENCE_S:g} s")
        with self._lock:
            self._silenced_until = self._clock() + duration_s
            self._buzzer.silence()
        self.records.write(
            "record the silence",
            lambda: self._store.add_event(
                EventKind.ALARM,
                f"alarm sound paused for {duration_s:g} s by {role} while the books could not "
                "be written",
                role=role,
                patient_s=patient_s,
                detail={"silenced_s": duration_s},
            ),
        )
        return duration_s

    # -- rollback -------------------------------------------------------------------------------

    def checkpoint(self) -> AlarmCheckpoint:
        """The state now, for :meth:`rollback` if a change cannot be written."""
        with self._lock:
            return AlarmCheckpoint(
                {code: dataclasses.replace(active) for code, active in self._active.items()},
                self._silenced_until,
                self._sounded_priority,
                self._last_burst_at,
            )

    def rollback(self, checkpoint: AlarmCheckpoint) -> None:
        with self._lock:
            self._active = {
                code: dataclasses.replace(active) for code, active in checkpoint.active.items()
            }
            self._silenced_until = checkpoint.silenced_until
            self._sounded_priority = checkpoint.sounded_priority
            self._last_burst_at = checkpoint.last_burst_at

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

    def active_alarms(self) -> list[dict[str, Any]]:
        """Active alarms, highest priority first, then oldest first: what a display shows.

        ``id`` is None for an alarm the books could not take yet (``on_books`` False).
        """
        with self._lock:
            entries = sorted(
                self._active.items(),
                key=lambda item: (-item[1].spec.priority.rank, item[1].raised_at_utc),
            )
            return [
                {
                    "id": active.alarm_id,
                    "code": code,
                    "priority": active.spec.priority.value,
                    "title": active.spec.title,
                    "message": active.message,
                    "detail": active.detail,
                    "action": active.spec.action,
                    "raised_at": active.raised_at_utc,
                    "raised_patient_time": active.raised_patient_time,
                    "acknowledged": active.acknowledged,
                    "condition_present": active.condition_present,
                    "rechecking": active.rechecking,
                    "on_books": active.alarm_id is not None,
                }
                for code, active in entries
            ]

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
