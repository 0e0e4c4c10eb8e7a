"""udev rules that give the bench's USB–serial devices the stable names ``rig.toml`` uses.

A USB–serial adapter becomes ``/dev/ttyUSB0`` or ``/dev/ttyUSB1`` in the order the kernel finds
it, so the balance and the SCC1 cable could swap names at the next boot. The rules here match
each adapter by USB vendor and product id (and serial number when set) and add a link named
after its port in ``rig.toml``: ``/dev/itbrig-balance`` → ``ttyUSB1``. ``install.sh`` writes
them to ``/etc/udev/rules.d/`` from ``itbrig config udev-rules``.
"""

from __future__ import annotations

from hal.config import STABLE_PORT_PREFIX, HardwareConfig

RULES_FILE_NAME = "60-itbrig.rules"
SERIAL_GROUP = "dialout"


def udev_rules(config: HardwareConfig) -> str:
    """The rules file for *config*: one rule per USB–serial device in use with a stable name."""
    lines = [
        "# udev rules of the ITB pump training rig (training device, not for clinical use).",
        "# Written by install.sh from rig.toml (itbrig config udev-rules); edit rig.toml and",
        "# re-run install.sh instead of this file.",
    ]
    devices = config.serial_devices()
    if not devices:
        lines.append("# No USB-serial device in use (no balance, flow sensor on I2C).")
    for what, port, usb in devices:
        if not port.startswith(STABLE_PORT_PREFIX):
            lines.append(f"# {what}: rig.toml names {port} itself; no rule needed.")
            continue
        match = [
            'SUBSYSTEM=="tty"',
            f'ATTRS{{idVendor}}=="{usb.vendor_id}"',
            f'ATTRS{{idProduct}}=="{usb.product_id}"',
        ]
        if usb.serial is not None:
            match.append(f'ATTRS{{serial}}=="{usb.serial}"')
        link = port.removeprefix("/dev/")
        described = f"USB {usb.usb_id}" + (f" serial {usb.serial}" if usb.serial else "")
        lines.append(f"# {what}: {described} -> {port}")
        lines.append(
            ", ".join([*match, f'SYMLINK+="{link}"', f'GROUP="{SERIAL_GROUP}"', 'MODE="0660"'])
        )
    return "\n".join(lines) + "\n"
