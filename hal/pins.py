"""Pin factory selection: lgpio or RPi.GPIO on a Raspberry Pi, gpiozero's MockFactory otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gpiozero import Factory

HalKind = Literal["sim", "gpio"]

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


def pi_model(model_path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The Raspberry Pi model string from the device tree, or None when not on a Pi."""
    try:
        model = model_path.read_bytes().rstrip(b"\x00").decode("ascii", "replace")
    except OSError:
        return None
    return model if model.startswith("Raspberry Pi") else None


def default_hal_kind(model_path: Path = DEVICE_TREE_MODEL) -> HalKind:
    """``gpio`` on a Raspberry Pi, ``sim`` anywhere else."""
    return "gpio" if pi_model(model_path) else "sim"


def make_gpio_factory() -> Factory:
    """The real pin factory: lgpio (works on every Pi, the only one on a Pi 5), else RPi.GPIO."""
    try:
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except ImportError:
        pass
    from gpiozero.pins.rpigpio import RPiGPIOFactory

    return RPiGPIOFactory()


def make_sim_factory() -> Factory:
    """gpiozero's MockFactory with the bench pin class (PWM, observable, bounded history)."""
    from gpiozero.pins.mock import MockFactory

    from hal.sim.pins import BenchPin

    return MockFactory(pin_class=BenchPin)


def make_pin_factory(kind: HalKind) -> Factory:
    """Pin factory for *kind*: ``gpio`` (real header) or ``sim`` (MockFactory)."""
    if kind == "gpio":
        return make_gpio_factory()
    if kind == "sim":
        return make_sim_factory()
    raise ValueError(f"unknown hal kind {kind!r}; allowed: 'sim', 'gpio'")
