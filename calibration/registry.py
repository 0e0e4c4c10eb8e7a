"""Every calibration procedure by name: its parameters, its run function and its planned length.

The rig service finds this table through the ``itbrig.calibrations`` entry point, so that
``rig`` never imports ``calibration``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from calibration import accuracy, bolus, flow_sensor, occlusion, rate, volume
from calibration.bench import CalibrationBench, ProgressFn
from calibration.live import live_plots
from calibration.models import Params, Result
from calibration.report import result_table_lines, results_csv, samples_csv
from hal.bench import Bench
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
        Procedure(
            "rate",
            "Rate calibration (mean flow against set flow)",
            rate.RateParams,
            rate.RateResult,
            rate.run_rate,
            rate.planned_s,
        ),
        Procedure(
            "flow-sensor",
            "Flow-sensor calibration against the balance",
            flow_sensor.FlowSensorParams,
            flow_sensor.FlowSensorResult,
            flow_sensor.run_flow_sensor,
            flow_sensor.planned_s,
        ),
        Procedure(
            "occlusion",
            "Occlusion test (time to alarm, released bolus)",
            occlusion.OcclusionParams,
            occlusion.OcclusionResult,
            occlusion.run_occlusion,
            occlusion.planned_s,
        ),
        Procedure(
            "bolus",
            "Patient-bolus accuracy",
            bolus.BolusParams,
            bolus.BolusResult,
            bolus.run_bolus,
            bolus.planned_s,
        ),
    )
}


class ServiceHook:
    """What the rig service calls through the ``itbrig.calibrations`` entry point."""

    @staticmethod
    def describe() -> list[dict[str, Any]]:
        """Each procedure's name, title and parameter schema."""
        return [
            {"name": p.name, "title": p.title, "params": p.params.model_json_schema()}
            for p in PROCEDURES.values()
        ]

    @staticmethod
    def parse(name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Checked parameters of procedure *name* as JSON; InputError naming what is wrong."""
        procedure = PROCEDURES.get(name)
        if procedure is None:
            raise InputError(
                f"procedure: {name!r} is not a calibration; allowed: {', '.join(PROCEDURES)}"
            )
        return procedure.parse(params).model_dump(mode="json")

    @staticmethod
    def run(
        name: str,
        params: dict[str, Any],
        bench: Bench,
        *,
        now_s: Callable[[], float],
        wait_fn: Callable[[float], None],
        ul_per_step: float,
        syringe_ul: float | None,
        time_compression: float,
        progress_fn: ProgressFn,
    ) -> dict[str, Any]:
        """Run procedure *name* on *bench* in whatever time *wait_fn* lets pass; the result as
        JSON. The bench is left safe (motor stopped and released, catheter open) however it ends."""
        procedure = PROCEDURES[name]
        cb = CalibrationBench(
            bench,
            now_s=now_s,
            wait_fn=wait_fn,
            ul_per_step=ul_per_step,
            syringe_ul=syringe_ul,
            time_compression=time_compression,
            progress_fn=progress_fn,
        )
        try:
            return procedure.run(cb, procedure.parse(params)).model_dump(mode="json")
        finally:
            cb.make_safe()

    @staticmethod
    def export(run: dict[str, Any], name: str) -> bytes:
        """A run's ``samples.csv``, ``results.csv`` or ``report.pdf`` (default limits)."""
        from calibration.pdf import pdf_report

        if name == "samples.csv":
            return samples_csv(run).encode()
        if name == "results.csv":
            return results_csv(run).encode()
        if name == "report.pdf":
            return pdf_report(run)
        raise InputError(f"name: {name!r}; allowed: samples.csv, results.csv, report.pdf")

    @staticmethod
    def summary(result: dict[str, Any]) -> list[str]:
        """A result's headline numbers and table as text lines (the kiosk shows them)."""
        return result_table_lines(result)

    @staticmethod
    def live(procedure: str, params: dict[str, Any], samples: list[dict[str, Any]]) -> list:
        """Plots of a run so far, as series of points."""
        return live_plots(procedure, params, samples)


SERVICE_HOOK = ServiceHook()
