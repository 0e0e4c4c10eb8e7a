"""``rig.toml``: the rig's configuration file, loaded and validated in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from hal.config import HardwareConfig
from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml

DEFAULT_CONFIG_PATH = Path(__file__).parents[1] / "rig.toml"


class TherapyConfig(StrictModel):
    """Therapy defaults of the bench."""

    time_compression: Annotated[float, Field(ge=1, le=100_000, allow_inf_nan=False)] = 1440.0


class RigConfig(HardwareConfig):
    """The whole of ``rig.toml``: hardware tables plus therapy defaults."""

    therapy: TherapyConfig = TherapyConfig()


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
