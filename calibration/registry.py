"""Every calibration procedure by name: its parameters, its run function and its planned length.

The rig service finds this table through the ``itbrig.calibrations`` entry point, so that
``rig`` never imports ``calibration``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from calibration import accuracy, volume
from calibration.bench import CalibrationBench
from calibration.models import Params, Result
from rig.common.inputs import InputError


@dataclass(frozen=True)
class Procedure:
    name: str
    title: str
    params: type[Params]
    result: type[Result]
    run: Callable[[CalibrationBench, Any], Result]
    planned_s: Callable[[Any, float], float]
    """Bench seconds a run of these parameters takes (given the µL per step in force)."""

    def parse(self, values: dict[str, Any]) -> Params:
        """Checked parameters; :class:`InputError` naming each bad one and what is allowed."""
        try:
            return self.params.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}"
                for e in error.errors()
            )
            raise InputError(f"{self.name} calibration: {problems}") from None


PROCEDURES: dict[str, Procedure] = {
    p.name: p
    for p in (
        Procedure(
            "volume",
            "Volume calibration (µL per step)",
            volume.VolumeParams,
            volume.VolumeResult,
            volume.run_volume,
            volume.planned_s,
        ),
        Procedure(
            "accuracy",
            "IEC 60601-2-24 flow accuracy (start-up and trumpet curves)",
            accuracy.AccuracyParams,
            accuracy.AccuracyResult,
            accuracy.run_accuracy,
            lambda params, _ul_per_step: accuracy.planned_s(params),
        ),
    )
}
