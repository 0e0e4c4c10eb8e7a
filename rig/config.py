"""``rig.toml``: the rig's configuration file, loaded and validated in one place."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError

from hal.config import HardwareConfig, StrictModel
from rig.errors import InputError, describe_validation_error

DEFAULT_CONFIG_PATH = Path(__file__).with_name("rig.toml")


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
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{config_path}: cannot read config file ({error.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{config_path}: not valid TOML ({error})") from None
    return parse_config(data, str(config_path))
