"""rig.toml validation and ``itbrig config check``."""

from __future__ import annotations

import pytest

from rig.cli import EXIT_BAD_INPUT, EXIT_OK, main
from rig.common.inputs import InputError
from rig.service.config import DEFAULT_CONFIG_PATH, load_config, parse_config


def test_shipped_default_is_valid_and_gives_the_design_geometry():
    config = load_config()
    # The 20 mL syringe (19.13 mm bore) on an M5 lead screw at 1/32 microstepping.
    assert config.ul_per_microstep == pytest.approx(0.0359277, rel=1e-5)
    assert round(1000.0 / config.ul_per_microstep) == 27834
    assert config.therapy.reservoir_capacity_ml == config.syringe.nominal_volume_ml == 20.0
    assert config.therapy.time_compression == 1440.0
    assert config.pins.pinch_valve == 19
    assert config.kiosk.rotation == 0
    assert config.selftest.min_free_mb == 100.0


@pytest.mark.parametrize(
    ("document", "names"),
    [
        ({"pins": {"stepp": 4}}, ["pins.stepp", "unknown key"]),
        ({"colour": "red"}, ["colour", "unknown key"]),
        ({"pins": {"step": "18"}}, ["pins.step", "str"]),
        ({"pins": {"step": 1}}, ["pins.step", "greater than or equal to 2"]),
        ({"pins": {"step": 28}}, ["pins.step", "less than or equal to 27"]),
        ({"pins": {"step": 18, "buzzer": 18}}, ["pin 18 is used twice", "step and buzzer"]),
        ({"pins": {"microstep": [17, 27]}}, ["pins.microstep", "at least 3"]),
        ({"pins": {"led_red": 2}}, ["pins.led_red = 2", "I2C"]),
        ({"syringe": {"inner_diameter_mm": 0}}, ["syringe.inner_diameter_mm", "greater than 0"]),
        ({"syringe": {"nominal_volume_ml": -10.0}}, ["syringe.nominal_volume_ml"]),
        ({"syringe": {"inner_diameter_mm": float("nan")}}, ["syringe.inner_diameter_mm"]),
        ({"drive": {"lead_screw_pitch_mm": 0.0}}, ["drive.lead_screw_pitch_mm"]),
        ({"drive": {"steps_per_rev": 0}}, ["drive.steps_per_rev"]),
        ({"drive": {"microstepping": 64}}, ["drive.microstepping"]),
        ({"drive": {"driver": "a4988", "microstepping": 32}}, ["a4988"]),
        ({"flow_sensor": {"kind": "usb"}}, ["flow_sensor.kind", "'i2c' or 'scc1'"]),
        ({"balance": {"baud": 9601}}, ["balance.baud"]),
        ({"sim": {"initial_fill_ml": 25.0}}, ["initial_fill_ml", "exceeds"]),
        ({"therapy": {"reservoir_capacity_ml": 40.0}}, ["reservoir_capacity_ml", "60 mL syringe"]),
        ({"therapy": {"reservoir_capacity_ml": 30.0}}, ["reservoir_capacity_ml", "20", "40"]),
        ({"therapy": {"max_bench_flow_ul_per_min": 0}}, ["therapy.max_bench_flow_ul_per_min"]),
        ({"sim": {"balance_readability_g": 0.0}}, ["sim.balance_readability_g"]),
        ({"sim": {"balance_readability_g": 2.5e-7}}, ["sim.balance_readability_g"]),
        ({"sim": {"balance_readability_g": 1.5e-6}}, ["balance_readability_g", "micrograms"]),
        ({"sim": {"balance_evaporation_mg_per_h": -1.0}}, ["sim.balance_evaporation_mg_per_h"]),
        ({"sim": {"balance_drift_g_per_h": float("inf")}}, ["sim.balance_drift_g_per_h"]),
        ({"sim": {"balance_sir_rate_hz": 0.0}}, ["sim.balance_sir_rate_hz"]),
        ({"sim": {"water_temperature_c": 120.0}}, ["sim.water_temperature_c"]),
        ({"therapy": {"time_compression": 0.5}}, ["therapy.time_compression"]),
        ({"kiosk": {"rotation": 45}}, ["kiosk.rotation", "0, 90, 180 or 270"]),
        ({"balance": {"port": "ttyUSB1"}}, ["balance.port", "not a device path"]),
        ({"balance": {"port": "/dev/itbrig-Balance"}}, ["balance.port", "lowercase letters"]),
        ({"balance": {"usb": {"vendor_id": "403"}}}, ["balance.usb.vendor_id", "four lowercase"]),
        ({"balance": {"usb": {"serial": "A5 02"}}}, ["balance.usb.serial", "1 to 64 letters"]),
        ({"balance": {"usb": {"vid": "0403"}}}, ["balance.usb.vid", "unknown key"]),
        (
            {"flow_sensor": {"kind": "scc1", "port": "/dev/itbrig-balance"}},
            ["flow_sensor.port and balance.port are both /dev/itbrig-balance"],
        ),
        (
            {"flow_sensor": {"kind": "scc1", "usb": {"serial": "X1"}}},
            ["both match USB id 0403:6001", "set a different usb.serial in each"],
        ),
        ({"kiosk": {"rotation": "90"}}, ["kiosk.rotation", "0, 90, 180 or 270"]),
        ({"kiosk": {"rotate": 90}}, ["kiosk.rotate", "unknown key"]),
        ({"selftest": {"signal_s": 5}}, ["selftest.signal_s", "less than or equal to 2"]),
        ({"selftest": {"zero_flow_samples": 0}}, ["selftest.zero_flow_samples"]),
    ],
)
def test_each_config_error_names_the_key_and_what_is_allowed(document, names):
    with pytest.raises(InputError) as raised:
        parse_config(document, "rig.toml")
    message = str(raised.value)
    assert message.startswith("rig.toml: ")
    for name in names:
        assert name in message


def test_config_check_exit_codes(tmp_path, capsys):
    assert main(["config", "check", str(DEFAULT_CONFIG_PATH)]) == EXIT_OK
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[pins]\nstep = 18\nbuzzer = 18\n[drive]\nsteps_per_rev = -1\n")
    assert main(["config", "check", str(bad)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "pin 18 is used twice" in err
    assert "drive.steps_per_rev" in err
    not_toml = tmp_path / "broken.toml"
    not_toml.write_text("[pins\n")
    assert main(["config", "check", str(not_toml)]) == EXIT_BAD_INPUT
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == EXIT_BAD_INPUT
    assert "cannot read" in capsys.readouterr().err
