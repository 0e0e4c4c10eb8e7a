"""Alarm manager: latching, acknowledge, silence re-arm, priorities on the real devices."""

from __future__ import annotations

import pytest

from hal.devices import AlarmBuzzer, StatusLed
from rig.service.alarm_manager import MAX_SILENCE_S, AlarmManager
from rig.service.books import RigStore, StorageError
from rig.service.records import PendingRecords
from tests.manual_clock import ManualClock


class RecordingBuzzer(AlarmBuzzer):
    """The real buzzer device, remembering each burst it was asked to play."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bursts: list[tuple[float, int]] = []

    def burst(self, frequency_hz, pulses, pulse_on_s=0.001, pulse_off_s=0.001):
        self.bursts.append((frequency_hz, pulses))
        super().burst(frequency_hz, pulses, 0.001, 0.001)


@pytest.fixture
def setup(mock_factory, tmp_path):
    store = RigStore.open(tmp_path / "rig.db")
    buzzer = RecordingBuzzer(12, pin_factory=mock_factory)
    led = StatusLed(16, 20, 21, pin_factory=mock_factory)
    clock = ManualClock(100.0)
    stops: list[str] = []
    manager = AlarmManager(store, buzzer, led, on_stop_delivery=stops.append, clock=clock)
    yield manager, store, buzzer, led, clock, stops
    buzzer.close()
    led.close()
    store.close()


def test_high_alarm_stops_delivery_sounds_ten_pulses_and_flashes_red(setup, mock_factory):
    manager, store, buzzer, _led, _clock, stops = setup
    assert manager.raise_condition("no_flow", "no flow while the motor runs")
    assert stops == ["no_flow"]
    manager.tick()
    assert buzzer.bursts[-1][1] == 10
    assert [row["code"] for row in store.active_alarms()] == ["no_flow"]
    assert manager.blocks_bolus()
    assert not manager.raise_condition("no_flow", "again")  # already active: not raised twice
    assert len(store.active_alarms()) == 1


def test_alarm_latches_until_condition_gone_and_acknowledged(setup):
    manager, store, _buzzer, _led, _clock, _stops = setup
    manager.raise_condition("under_infusion", "measured 70 % of expected")
    manager.condition_gone("under_infusion")
    assert manager.active_codes == ["under_infusion"]  # latched: still shown
    manager.acknowledge(role="clinician")
    assert manager.active_codes == []
    assert store.active_alarms() == []
    # Acknowledged while present: clears when the condition goes.
    manager.raise_condition("air_in_line", "air")
    manager.acknowledge(role="clinician")
    assert manager.active_codes == ["air_in_line"]
    manager.condition_gone("air_in_line")
    assert manager.active_codes == []


def test_silence_is_capped_and_re_arms(setup):
    manager, _store, buzzer, _led, clock, _stops = setup
    with pytest.raises(ValueError, match="120"):
        manager.silence(600, role="clinician")
    manager.raise_condition("sensor_fault", "silent sensor")
    manager.tick()
    assert buzzer.bursts[-1][1] == 3
    manager.silence(MAX_SILENCE_S, role="clinician")
    count = len(buzzer.bursts)
    clock.now_s += 60
    manager.tick()
    assert len(buzzer.bursts) == count
    assert manager.silence_remaining_s() == pytest.approx(60)
    clock.now_s += 61
    manager.tick()
    assert len(buzzer.bursts) == count + 1  # re-armed


def test_a_high_alarm_breaks_through_silence(setup):
    manager, _store, buzzer, _led, _clock, _stops = setup
    manager.raise_condition("sensor_fault", "silent sensor")
    manager.silence(role="clinician")
    manager.raise_condition("runaway", "flow 3x program")
    manager.tick()
    assert buzzer.bursts[-1][1] == 10


def test_non_latched_alarm_is_annunciated_once(setup):
    manager, store, buzzer, _led, _clock, stops = setup
    manager.raise_condition("dose_limit", "bolus above the daily maximum")
    assert manager.active_codes == []
    assert store.alarm_history()[0]["code"] == "dose_limit"
    assert buzzer.bursts[-1][1] == 2
    assert stops == []


def test_active_alarms_survive_a_restart(setup, mock_factory, tmp_path):
    manager, store, buzzer, led, clock, stops = setup
    manager.raise_condition("empty_reservoir", "reservoir empty")
    again = AlarmManager(store, buzzer, led, on_stop_delivery=stops.append, clock=clock)
    assert again.active_codes == ["empty_reservoir"]
    again.acknowledge(role="clinician")
    assert again.active_codes == []


def test_unknown_alarm_id_and_code(setup):
    manager, *_ = setup
    with pytest.raises(KeyError):
        manager.acknowledge(9999, role="clinician")
    with pytest.raises(ValueError):
        manager.raise_condition("gremlins", "?")


def test_delivery_stops_before_the_alarm_is_written(setup, monkeypatch):
    manager, store, _buzzer, _led, _clock, _stops = setup
    order: list[str] = []
    real_raise = store.raise_alarm
    monkeypatch.setattr(
        store, "raise_alarm", lambda *a, **k: order.append("written") or real_raise(*a, **k)
    )
    manager._on_stop_delivery = lambda code: order.append(f"stopped {code}")
    manager.raise_condition("runaway", "flow 3x program")
    assert order == ["stopped runaway", "written"]


def test_an_alarm_sounds_and_shows_when_the_books_cannot_be_written(setup):
    manager, store, buzzer, led, _clock, stops = setup
    failures = []
    manager.records.on_failure = failures.append
    store._db.execute("PRAGMA query_only = 1")  # every write refused by SQLite
    assert manager.raise_condition("occlusion", "line blocked")
    assert stops == ["occlusion"]
    assert buzzer.bursts[-1][1] == 10  # sounded at once, without the books
    assert led.color != (0, 0, 0)
    assert len(failures) == 1 and failures[0].kind == "readonly"
    (alarm,) = manager.active_alarms()
    assert (alarm["code"], alarm["id"], alarm["on_books"]) == ("occlusion", None, False)
    manager.condition_gone("occlusion")
    assert manager.records.pending == 1
    # Acknowledging needs the books: refused, and nothing changes.
    with pytest.raises(StorageError):
        manager.acknowledge(role="clinician")
    assert manager.active_codes == ["occlusion"]
    # The books are back: what waited is written, in order, and the alarm has its id.
    store._db.execute("PRAGMA query_only = 0")
    assert manager.records.flush()
    (alarm,) = manager.active_alarms()
    assert alarm["on_books"] and [row["code"] for row in store.active_alarms()] == ["occlusion"]
    manager.acknowledge(role="clinician")
    assert manager.active_codes == [] and store.active_alarms() == []


def test_records_wait_in_order_and_are_counted_past_the_limit(setup):
    _manager, store, *_ = setup
    records = PendingRecords(store, limit=3)
    store._db.execute("PRAGMA query_only = 1")
    for n in range(5):
        records.write(f"event {n}", lambda n=n: store.add_event("note", f"event {n}"))
    assert (records.pending, records.dropped) == (3, 2)
    assert not records.flush()
    store._db.execute("PRAGMA query_only = 0")
    assert records.flush() and records.written_late == 3
    assert [e["message"] for e in store.events(kind="note")] == ["event 0", "event 1", "event 2"]
