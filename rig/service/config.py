"""``rig.toml``: the rig's configuration file, loaded and validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from hal.config import HardwareConfig
from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml

DEFAULT_CONFIG_PATH = Path(__file__).parents[1] / "rig.toml"


class TherapyConfig(StrictModel):
    """Therapy defaults of the bench."""

    time_compression: Annotated[float, Field(ge=1, le=100_000, allow_inf_nan=False)] = 1440.0
    """Nominal: the effective factor is lower wherever the bench could not follow."""
    reservoir_capacity_ml: Literal[20.0, 40.0] = 20.0
    """The implant's reservoir, played by the bench syringe."""
    max_bench_flow_ul_per_min: (
        Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)] | None
    ) = None
    """A bench flow limit below the drive's and the flow sensor's (None: theirs only)."""


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

    @model_validator(mode="after")
    def _syringe_holds_the_reservoir(self) -> RigConfig:
        capacity_ml = self.therapy.reservoir_capacity_ml
        if capacity_ml > self.syringe.nominal_volume_ml:
            raise ValueError(
                f"therapy.reservoir_capacity_ml: a {capacity_ml:g} mL reservoir needs a syringe "
                f"of at least {capacity_ml:g} mL, and [syringe] nominal_volume_ml is "
                f"{self.syringe.nominal_volume_ml:g} mL (a 20 mL syringe serves the 20 mL "
                "reservoir, a 50 or 60 mL syringe the 40 mL one)"
            )
        return self


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
