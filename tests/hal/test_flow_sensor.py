"""The flow-sensor drivers against the simulated SLF3S-0600F on its real wire protocols."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sensirion_i2c_sf06_lf import Sf06LfDevice

from hal.config import FlowSensorConfig
from hal.flow_sensor import (
    FlowSensorAbsent,
    FlowSensorDataError,
    FlowSensorTimeout,
    Scc1FlowSensor,
    Sf06FlowSensor,
    open_flow_sensor,
)
from hal.sim.flow_sensor import (
    SLF3S_0600F_PRODUCT_ID,
    SensorFaults,
    SimulatedScc1Cable,
    SimulatedSlf3s,
    crc8,
    sim_i2c_channel,
)
from tests.manual_clock import ManualClock


class Flow:
    """A settable true flow through the line."""

    def __init__(self, ul_per_min: float) -> None:
        self.ul_per_min = ul_per_min

    def __call__(self) -> float:
        return self.ul_per_min


def started(device: SimulatedSlf3s, clock: ManualClock | None = None) -> Sf06FlowSensor:
    """A driver on the device's mock I2C channel, measuring, past the 12 ms first-result delay."""
    sensor = Sf06FlowSensor(sim_i2c_channel(device))
    sensor.start()
    if clock is not None:
        clock.advance(0.012)
    return sensor


# --- I2C path over the vendor's mock I2C channel ----------------------------------------------


def test_crc8_matches_the_sensirion_datasheet_example() -> None:
    assert crc8(b"\xbe\xef") == 0x92
    assert crc8(b"\x00\x00") == 0x81


def test_constant_flow_reads_back_in_physical_units() -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0)
    sensor = started(device, clock)

    reading = sensor.read()

    assert reading.flow_ul_per_min == pytest.approx(25.0, abs=0.1)
    assert reading.temperature_c == pytest.approx(23.0, abs=0.005)
    assert reading.air_in_line is False
    assert reading.high_flow is False
    assert sensor.is_measuring


def test_the_0600f_accepts_the_ipa_start_command_and_records_the_medium() -> None:
    """Command 0x3615 starts the IPA calibration, which the SLF3S-0600F supports."""
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0)
    vendor = Sf06LfDevice(sim_i2c_channel(device))

    vendor.start_ipa_continuous_measurement()
    clock.advance(0.012)

    assert device.is_measuring
    assert device.medium == "ipa"
    flow, _temperature, _flags = vendor.read_measurement_data(Sf06FlowSensor.FLOW_SCALE)
    assert flow.value == pytest.approx(25.0, abs=0.1)  # same scale factor (10 per µL/min)
    vendor.stop_continuous_measurement()
    assert device.medium is None


@pytest.mark.parametrize("medium", ["water", "ipa"])
def test_the_driver_starts_either_calibration_and_reports_it(medium: str) -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0)
    sensor = Sf06FlowSensor(sim_i2c_channel(device))

    sensor.start(medium=medium)
    clock.advance(0.012)
    reading = sensor.read()

    assert device.medium == sensor.medium == reading.medium == medium
    assert reading.flow_ul_per_min == pytest.approx(25.0, abs=0.1)
    sensor.start()  # water, the default, after a restart
    assert device.medium == sensor.medium == "water"


def test_an_unknown_medium_is_refused_before_anything_is_sent() -> None:
    device = SimulatedSlf3s(lambda: 25.0)
    sensor = Sf06FlowSensor(sim_i2c_channel(device))

    with pytest.raises(ValueError, match=r"'oil'.*water, ipa"):
        sensor.start(medium="oil")  # type: ignore[arg-type]
    assert not device.is_measuring


def test_identify_returns_product_and_serial_number() -> None:
    device = SimulatedSlf3s(lambda: 0.0, serial_number=0x1122334455667788)
    sensor = Sf06FlowSensor(sim_i2c_channel(device))

    assert sensor.identify() == (SLF3S_0600F_PRODUCT_ID, 0x1122334455667788)


def test_start_refuses_a_sensor_of_another_product() -> None:
    device = SimulatedSlf3s(lambda: 25.0, product_id=0x07030201)  # an SLF3S-1300F
    sensor = Sf06FlowSensor(sim_i2c_channel(device))

    with pytest.raises(FlowSensorDataError, match="SLF3S_1300"):
        sensor.start()
    assert not device.is_measuring


def test_step_change_settles_within_five_time_constants() -> None:
    clock = ManualClock(1000.0)
    flow = Flow(0.0)
    tau_s = 0.05
    device = SimulatedSlf3s(flow, clock=clock, noise_ul_per_min=0.0, time_constant_s=tau_s)
    sensor = started(device, clock)
    assert sensor.read().flow_ul_per_min == pytest.approx(0.0, abs=0.1)

    flow.ul_per_min = 100.0
    clock.advance(tau_s)
    after_one_tau = sensor.read().flow_ul_per_min
    clock.advance(4 * tau_s)
    after_five_tau = sensor.read().flow_ul_per_min

    assert after_one_tau == pytest.approx(100.0 * (1 - math.exp(-1)), abs=0.1)
    assert after_five_tau == pytest.approx(100.0 * (1 - math.exp(-5)), abs=0.1)
    assert after_five_tau > 99.0


def test_temperature_and_air_in_line_flag_are_decoded() -> None:
    clock = ManualClock(1000.0)
    air = {"present": False}
    device = SimulatedSlf3s(
        lambda: 10.0,
        clock=clock,
        noise_ul_per_min=0.0,
        temperature_c=37.5,
        air_in_line=lambda: air["present"],
    )
    sensor = started(device, clock)

    first = sensor.read()
    air["present"] = True
    second = sensor.read()
    air["present"] = False
    device.set_faults(SensorFaults(air_in_line=True))
    third = sensor.read()

    assert first.temperature_c == pytest.approx(37.5, abs=0.005)
    assert (first.air_in_line, second.air_in_line, third.air_in_line) == (False, True, True)


def test_an_air_fault_between_reads_stays_flagged_until_a_read_reports_it() -> None:
    """The sensor keeps an event flagged until it is read, even when the cause is gone."""
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 10.0, clock=clock, noise_ul_per_min=0.0)
    sensor = started(device, clock)
    assert sensor.read().air_in_line is False

    device.set_faults(SensorFaults(air_in_line=True))
    clock.advance(0.5)
    device.set_faults(SensorFaults())  # the bubble has gone by before the next read

    assert sensor.read().air_in_line is True
    assert sensor.read().air_in_line is False  # reported once, then cleared


def test_high_flow_between_reads_stays_flagged_until_a_read_reports_it() -> None:
    clock = ManualClock(1000.0)
    flow = Flow(25.0)
    device = SimulatedSlf3s(flow, clock=clock, noise_ul_per_min=0.0, time_constant_s=0.0)
    sensor = started(device, clock)
    assert sensor.read().high_flow is False

    flow.ul_per_min = 4000.0  # a surge beyond full scale, measured by the sensor on its own
    clock.advance(0.01)
    device.sample()
    flow.ul_per_min = 25.0
    clock.advance(0.01)

    first, second = sensor.read(), sensor.read()
    assert first.flow_ul_per_min == pytest.approx(25.0, abs=0.1)
    assert (first.high_flow, second.high_flow) == (True, False)


@pytest.mark.parametrize(
    ("true_flow_ul_per_min", "expected_ul_per_min", "high_flow"),
    [(3000.0, 3000.0, False), (4000.0, 3276.7, True), (-4000.0, -3276.8, True)],
)
def test_high_flow_flag_and_saturation_at_the_int16_range(
    true_flow_ul_per_min: float, expected_ul_per_min: float, high_flow: bool
) -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: true_flow_ul_per_min, clock=clock, noise_ul_per_min=0.0)
    reading = started(device, clock).read()

    assert reading.flow_ul_per_min == pytest.approx(expected_ul_per_min, abs=0.05)
    assert reading.high_flow is high_flow


def test_offset_bias_and_drift_add_to_the_measured_flow() -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0, offset_ul_per_min=-1.0)
    sensor = started(device, clock)
    device.set_faults(SensorFaults(bias_ul_per_min=2.0, drift_ul_per_min_per_s=0.5))

    clock.advance(4.0)

    assert sensor.read().flow_ul_per_min == pytest.approx(25.0 - 1.0 + 2.0 + 0.5 * 4.0, abs=0.1)


def test_noise_is_gaussian_with_the_given_sigma_and_reproducible_by_seed() -> None:
    def samples(seed: int) -> list[float]:
        clock = ManualClock(1000.0)
        device = SimulatedSlf3s(lambda: 50.0, clock=clock, noise_ul_per_min=2.0, seed=seed)
        sensor = started(device, clock)
        return [sensor.read().flow_ul_per_min for _ in range(400)]

    first, again, other = samples(7), samples(7), samples(8)

    assert first == again
    assert first != other
    assert statistics.fmean(first) == pytest.approx(50.0, abs=0.4)
    assert statistics.stdev(first) == pytest.approx(2.0, rel=0.15)


def test_corrupted_crc_raises_data_error() -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0)
    sensor = started(device, clock)
    device.set_faults(SensorFaults(crc_error=True))

    with pytest.raises(FlowSensorDataError, match="CRC"):
        sensor.read()


@pytest.mark.timeout(5)
def test_dropout_raises_absent_promptly_and_recovers() -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0)
    sensor = started(device, clock)
    device.set_faults(SensorFaults(dropout=True))

    began = time.monotonic()
    with pytest.raises(FlowSensorAbsent, match="NACK"):
        sensor.read()
    assert time.monotonic() - began < 0.5

    device.set_faults(SensorFaults())
    assert sensor.read().flow_ul_per_min == pytest.approx(25.0, abs=0.1)


def test_reads_are_refused_before_start_and_for_12_ms_after_it_like_the_part() -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock, noise_ul_per_min=0.0)
    sensor = Sf06FlowSensor(sim_i2c_channel(device))

    with pytest.raises(FlowSensorAbsent, match="start"):
        sensor.read()
    sensor.start()
    clock.advance(0.011)
    with pytest.raises(FlowSensorAbsent):
        sensor.read()
    clock.advance(0.001)
    assert sensor.read().flow_ul_per_min == pytest.approx(25.0, abs=0.1)
    sensor.stop()
    with pytest.raises(FlowSensorAbsent):
        sensor.read()


def test_close_stops_the_measurement() -> None:
    clock = ManualClock(1000.0)
    device = SimulatedSlf3s(lambda: 25.0, clock=clock)
    sensor = started(device, clock)
    assert device.is_measuring

    sensor.close()
    sensor.close()

    assert not device.is_measuring


def test_open_flow_sensor_i2c_on_a_missing_bus_is_absent(tmp_path: Path) -> None:
    bus = str(tmp_path / "i2c-7")
    config = FlowSensorConfig(kind="i2c", i2c_bus=bus, i2c_address=0x08)

    with pytest.raises(FlowSensorAbsent, match=f"0x08 on {bus}"):
        open_flow_sensor(config)


def test_i2c_bus_path_that_is_not_an_i2c_adapter_is_absent(tmp_path: Path) -> None:
    not_a_bus = tmp_path / "i2c-1"
    not_a_bus.write_bytes(b"")

    with pytest.raises(FlowSensorAbsent, match="opening the I2C bus"):
        Sf06FlowSensor.from_bus(str(not_a_bus), 0x08, 0.5)


# --- SCC1 path: SHDLC over a pseudo-terminal ----------------------------------------------------

SCC1_READ_TIMEOUT_S = 0.2


@pytest.fixture
def cable_flow() -> Flow:
    return Flow(25.0)


@pytest.fixture
def cable(cable_flow: Flow) -> Iterator[SimulatedScc1Cable]:
    device = SimulatedSlf3s(cable_flow, noise_ul_per_min=0.0, time_constant_s=0.0, seed=1)
    with SimulatedScc1Cable(device, seed=2) as simulated:
        yield simulated


@pytest.fixture
def scc1_sensor(cable: SimulatedScc1Cable) -> Iterator[Scc1FlowSensor]:
    sensor = Scc1FlowSensor(cable.port, read_timeout_s=SCC1_READ_TIMEOUT_S)
    try:
        yield sensor
    finally:
        sensor.close()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("true_flow_ul_per_min", [25.0, 447.8, -12.5])
def test_scc1_reads_the_sensor_end_to_end(
    cable: SimulatedScc1Cable,
    cable_flow: Flow,
    scc1_sensor: Scc1FlowSensor,
    true_flow_ul_per_min: float,
) -> None:
    # 447.8 µL/min is raw 0x117E: both bytes must be byte-stuffed in the SHDLC frame.
    cable_flow.ul_per_min = true_flow_ul_per_min
    cable.device.temperature_c = 31.25

    scc1_sensor.start()
    reading = scc1_sensor.read()

    assert reading.flow_ul_per_min == pytest.approx(true_flow_ul_per_min, abs=0.1)
    assert reading.temperature_c == pytest.approx(31.25, abs=0.005)
    assert reading.air_in_line is False
    assert scc1_sensor.cable_serial_number == cable.serial_number
    assert cable.device.is_measuring


@pytest.mark.timeout(10)
def test_open_flow_sensor_scc1_opens_the_cable(cable: SimulatedScc1Cable) -> None:
    config = FlowSensorConfig(kind="scc1", port=cable.port, read_timeout_s=SCC1_READ_TIMEOUT_S)

    sensor = open_flow_sensor(config)
    try:
        assert isinstance(sensor, Scc1FlowSensor)
        sensor.start()
        assert sensor.read().flow_ul_per_min == pytest.approx(25.0, abs=0.1)
    finally:
        sensor.close()
    assert not cable.device.is_measuring


@pytest.mark.timeout(10)
def test_scc1_missing_serial_port_is_absent(tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")

    with pytest.raises(FlowSensorAbsent, match="ttyUSB9"):
        Scc1FlowSensor(port, read_timeout_s=SCC1_READ_TIMEOUT_S)
    with pytest.raises(FlowSensorAbsent, match="ttyUSB9"):
        open_flow_sensor(FlowSensorConfig(kind="scc1", port=port))


@pytest.mark.timeout(10)
def test_scc1_silent_cable_times_out_quickly_and_recovers(
    cable: SimulatedScc1Cable, scc1_sensor: Scc1FlowSensor
) -> None:
    scc1_sensor.start()
    cable.dropout = True

    began = time.monotonic()
    with pytest.raises(FlowSensorTimeout, match="SCC1"):
        scc1_sensor.read()
    elapsed_s = time.monotonic() - began

    assert SCC1_READ_TIMEOUT_S <= elapsed_s < SCC1_READ_TIMEOUT_S + 0.5
    cable.dropout = False
    assert scc1_sensor.read().flow_ul_per_min == pytest.approx(25.0, abs=0.1)


@pytest.mark.timeout(10)
def test_scc1_silent_cable_at_open_times_out(cable: SimulatedScc1Cable) -> None:
    cable.dropout = True

    with pytest.raises(FlowSensorTimeout):
        Scc1FlowSensor(cable.port, read_timeout_s=SCC1_READ_TIMEOUT_S)


@pytest.mark.timeout(10)
def test_scc1_garbage_raises_data_error_and_recovers(
    cable: SimulatedScc1Cable, scc1_sensor: Scc1FlowSensor
) -> None:
    scc1_sensor.start()
    cable.garbage = True

    with pytest.raises(FlowSensorDataError, match="SHDLC"):
        scc1_sensor.read()

    cable.garbage = False
    assert scc1_sensor.read().flow_ul_per_min == pytest.approx(25.0, abs=0.1)


@pytest.mark.timeout(10)
def test_scc1_sensor_dropout_behind_the_cable_is_absent(
    cable: SimulatedScc1Cable, scc1_sensor: Scc1FlowSensor
) -> None:
    scc1_sensor.start()
    cable.device.set_faults(SensorFaults(dropout=True))

    with pytest.raises(FlowSensorAbsent, match="cable reported error"):
        scc1_sensor.read()


@pytest.mark.timeout(10)
def test_scc1_read_before_start_is_refused(scc1_sensor: Scc1FlowSensor) -> None:
    with pytest.raises(FlowSensorAbsent):
        scc1_sensor.read()
    scc1_sensor.start()
    assert scc1_sensor.read().flow_ul_per_min == pytest.approx(25.0, abs=0.1)


@pytest.mark.timeout(10)
def test_scc1_corrupted_crc_behind_the_cable_raises_data_error(
    cable: SimulatedScc1Cable, scc1_sensor: Scc1FlowSensor
) -> None:
    scc1_sensor.start()
    cable.device.set_faults(SensorFaults(crc_error=True))

    with pytest.raises(FlowSensorDataError, match="CRC"):
        scc1_sensor.read()


def test_an_absent_sensor_raises_its_reason_on_every_measurement_call():
    from hal.flow_sensor import AbsentFlowSensor

    sensor = AbsentFlowSensor("SCC1 cable on /dev/itbrig-scc1: cannot open the serial port")
    for call in (sensor.start, sensor.read, sensor.identify):
        with pytest.raises(FlowSensorAbsent, match="/dev/itbrig-scc1: cannot open"):
            call()
    sensor.stop()
    sensor.close()
    assert not sensor.is_measuring
    assert "absent flow sensor" in sensor.description
