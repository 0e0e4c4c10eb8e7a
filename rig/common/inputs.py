"""User input, read and checked the same way everywhere: config files, program files, API bodies.

Strict models (unknown keys are errors, nothing coerced), one readable line per problem, and TOML
files that are unreadable or malformed rejected with the file's name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


class InputError(ValueError):
    """User input was rejected; the message names each field, what was wrong and what is allowed."""


def describe_validation_error(error: ValidationError, source: str = "") -> str:
    """One readable line per problem: ``source: field.path: what is wrong``."""
    lines = []
    for problem in error.errors(include_url=False):
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key (not allowed here)"
        elif problem["type"] == "missing":
            message = "required key is missing"
        elif problem["type"].endswith("_type"):
            message = f"{message}, got {type(problem.get('input')).__name__}"
        message = message.removeprefix("Value error, ")
        prefix = f"{source}: " if source else ""
        lines.append(f"{prefix}{location}: {message}")
    return "\n".join(lines)


def whole_number(value: object) -> object:
    """A float with no fractional part (``2.0``) as the integer it is, as JSON Schema counts it;
    anything else unchanged, for the strict validation that follows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class StrictModel(BaseModel):
    """Base of every model of user input: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def read_toml(path: Path | str, what: str) -> dict:
    """Read a TOML file; unreadable or malformed files raise :class:`InputError`."""
    file_path = Path(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"{file_path}: cannot read {what} ({error.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{file_path}: not valid TOML ({error})") from None
