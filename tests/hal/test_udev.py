"""udev rules for the bench's USB-serial devices, and the buses a rig.toml needs."""

from __future__ import annotations

from hal.udev import udev_rules
from rig.cli import EXIT_BAD_INPUT, EXIT_OK, main
from rig.service.config import DEFAULT_CONFIG_PATH, load_config, parse_config

BALANCE_RULE = (
    'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", '
    'SYMLINK+="itbrig-balance", GROUP="dialout", MODE="0660"'
)


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_shipped_rig_toml_names_the_balance_by_its_adapter():
    config = load_config()
    assert config.balance.port == "/dev/itbrig-balance"
    assert config.flow_sensor.port == "/dev/itbrig-scc1"
    assert rule_lines(udev_rules(config)) == [BALANCE_RULE]
    assert config.buses() == ["i2c"]


def test_an_scc1_cable_and_a_balance_on_the_same_ids_are_told_apart_by_serial_number():
    config = parse_config(
        {
            "flow_sensor": {"kind": "scc1", "usb": {"serial": "FT4SCC1A"}},
            "balance": {"usb": {"serial": "A50285BI"}},
        }
    )
    assert rule_lines(udev_rules(config)) == [
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", '
        'ATTRS{serial}=="A50285BI", SYMLINK+="itbrig-balance", GROUP="dialout", MODE="0660"',
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", '
        'ATTRS{serial}=="FT4SCC1A", SYMLINK+="itbrig-scc1", GROUP="dialout", MODE="0660"',
    ]
    assert config.buses() == []


def test_other_ids_and_kernel_names_need_no_serial_number():
    config = parse_config(
        {
            "flow_sensor": {"kind": "scc1"},
            "balance": {"usb": {"vendor_id": "067b", "product_id": "2303"}},
        }
    )
    rules = rule_lines(udev_rules(config))
    assert 'ATTRS{idVendor}=="067b", ATTRS{idProduct}=="2303"' in rules[0]
    assert 'SYMLINK+="itbrig-scc1"' in rules[1]
    by_kernel_name = parse_config({"balance": {"port": "/dev/ttyUSB0"}})
    text = udev_rules(by_kernel_name)
    assert rule_lines(text) == []
    assert "# balance: rig.toml names /dev/ttyUSB0 itself; no rule needed." in text


def test_nothing_to_name_without_a_balance_or_a_cable():
    config = parse_config({"balance": {"enabled": False}})
    text = udev_rules(config)
    assert rule_lines(text) == []
    assert "No USB-serial device in use" in text


def test_a_balance_on_the_pis_own_uart_needs_the_serial_port():
    config = parse_config({"balance": {"port": "/dev/serial0"}})
    assert config.buses() == ["i2c", "uart"]
    assert rule_lines(udev_rules(config)) == []


def test_config_udev_rules_and_buses_commands(tmp_path, capsys):
    assert main(["config", "udev-rules", str(DEFAULT_CONFIG_PATH)]) == EXIT_OK
    assert BALANCE_RULE in capsys.readouterr().out
    assert main(["config", "buses", str(DEFAULT_CONFIG_PATH)]) == EXIT_OK
    assert capsys.readouterr().out == "i2c\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('[flow_sensor]\nkind = "scc1"\n')
    for command in ("udev-rules", "buses"):
        assert main(["config", command, str(bad)]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "both match USB id 0403:6001" in err and "usb.serial" in err
