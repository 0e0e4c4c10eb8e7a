"""Input errors shared by every loader of user input (config files, program files, API bodies)."""

from __future__ import annotations

from pydantic import ValidationError


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
