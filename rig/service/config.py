"""``rig.toml``: the rig's configuration file, loaded and validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from hal.config import HardwareConfig
from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml

DEFAULT_CONFIG_PATH = Path(__file__).parents[1] / "rig.toml"


class TherapyConfig(StrictModel):
    """Therapy defaults of the bench."""

    time_compression: Annotated[float, Field(ge=1, le=100_000, allow_inf_nan=False)] = 1440.0


class SelfTestConfig(StrictModel):
    """Limits of the power-on self-test (``itbrig selftest`` and at service start)."""

    zero_flow_tolerance_ul_per_min: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = (
        5.0
    )
    """Largest mean flow the sensor may read with the pump stopped (either sign)."""
    zero_flow_samples: Annotated[int, Field(ge=1, le=100, strict=True)] = 10
    """Flow readings averaged for the zero-flow check, 20 ms apart."""
    balance_stable_timeout_s: Annotated[float, Field(gt=0, le=30, allow_inf_nan=False)] = 3.0
    """How long the balance may take to report a stable weight."""
    min_free_mb: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 100.0
    """Free space (MB, 10^6 bytes) the books' file system must have."""
    signal_s: Annotated[float, Field(ge=0.01, le=2, allow_inf_nan=False)] = 0.2
    """How long the buzzer sounds and each LED colour shows while they cycle."""


class KioskConfig(StrictModel):
    """The touchscreen kiosk; the service hands these to the kiosk with its status."""

    rotation: Literal[0, 90, 180, 270] = 0
    """Clockwise degrees the kiosk turns its picture and its touch input (the panel's mounting)."""


class RigConfig(HardwareConfig):
    """The whole of ``rig.toml``: hardware tables plus therapy defaults and service settings."""

    therapy: TherapyConfig = TherapyConfig()
    selftest: SelfTestConfig = SelfTestConfig()
    kiosk: KioskConfig = KioskConfig()


def parse_config(data: dict, source: str = "config") -> RigConfig:
    """Validate an already-parsed TOML document; raise :class:`InputError` naming every problem."""
    try:
        return RigConfig.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, source)) from None


def load_config(path: Path | str | None = None) -> RigConfig:
    """Load and validate a config file (the shipped default when *path* is None)."""
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    return parse_config(read_toml(config_path, "config file"), str(config_path))
