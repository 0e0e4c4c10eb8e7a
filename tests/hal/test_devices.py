"""Device classes over MockFactory pins: drive pins, switches, buzzer, LED, valves."""

from __future__ import annotations

import pytest

from hal.config import DriveConfig, HardwareConfig
from hal.devices import AlarmBuzzer, LimitSwitches, StatusLed, SyringeDrive


def make_drive(mock_factory, microstepping: int = 32, driver: str = "drv8825") -> SyringeDrive:
    config = HardwareConfig(drive=DriveConfig(driver=driver, microstepping=microstepping))
    return SyringeDrive.from_config(config.pins, config.drive, pin_factory=mock_factory)


def test_drive_starts_released_and_pointing_to_infuse(mock_factory):
    drive = make_drive(mock_factory)
    enable_pin = mock_factory.pin(24)
    assert enable_pin.state == 1  # ENABLE is active low: high means released
    assert not drive.is_enabled
    drive.energise()
    assert enable_pin.state == 0
    assert drive.is_enabled
    drive.release()
    assert enable_pin.state == 1


@pytest.mark.parametrize(
    ("microstepping", "expected"),
    [(1, (0, 0, 0)), (2, (1, 0, 0)), (8, (1, 1, 0)), (32, (1, 0, 1))],
)
def test_microstep_select_pins_follow_the_driver_table(mock_factory, microstepping, expected):
    drive = make_drive(mock_factory, microstepping=microstepping)
    states = tuple(mock_factory.pin(n).state for n in (17, 27, 22))
    assert states == expected
    assert drive.microstepping == microstepping


def test_pulse_toggles_step_pin_and_direction_is_explicit(mock_factory):
    drive = make_drive(mock_factory)
    step_pin = mock_factory.pin(18)
    seen: list[float] = []
    step_pin.add_listener(seen.append)
    drive.point("infuse")
    assert mock_factory.pin(23).state == 1
    drive.pulse()
    drive.pulse()
    assert seen == [1.0, 0.0, 1.0, 0.0]
    drive.point("withdraw")
    assert drive.direction_name == "withdraw"
    assert mock_factory.pin(23).state == 0


def test_limit_switches_read_pulled_up_inputs(mock_factory):
    switches = LimitSwitches(5, 6, pin_factory=mock_factory)
    assert not switches.at_full and not switches.at_empty
    mock_factory.pin(6).drive_low()
    assert switches.at_empty
    mock_factory.pin(6).drive_high()
    assert not switches.at_empty


def test_buzzer_burst_plays_and_silences(mock_factory):
    buzzer = AlarmBuzzer(12, pin_factory=mock_factory)
    buzzer.burst(frequency_hz=500, pulses=3, pulse_on_s=0.01, pulse_off_s=0.01)
    buzzer.silence()
    assert not buzzer.is_sounding
    assert mock_factory.pin(12).state == 0


def test_status_led_shows_named_colour(mock_factory):
    led = StatusLed(16, 20, 21, pin_factory=mock_factory)
    led.show("red")
    assert (mock_factory.pin(16).state, mock_factory.pin(20).state) == (1, 0)
    with pytest.raises(ValueError, match="colour"):
        led.show("purple")
