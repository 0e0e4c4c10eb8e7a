"""Occlusion test: at a set rate close the pinch valve (a kinked catheter), time the rig's flow
alarm, then release and weigh the bolus the pressurised line lets go.

The alarm is the rig's own: the service's :class:`FlowMonitor` with the service's windows judges
the sensor's readings against the steps, every sensor period, as the delivery loop does. The time
to alarm is given in bench seconds and in patient minutes (bench time × time compression). When
the alarm comes the motor stops, as the service's alarm stops it; the vessel is tared, the valve
opened, and what arrives is the unintended bolus (balance, and the sensor's flow integrated).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from calibration.bench import CalibrationBench
from calibration.models import Params, PositiveFloat, Result, Row
from rig.service.flow_monitor import FlowMonitor
from rig.service.loop import SENSOR_PERIOD_S, flow_limits_for
from rig.therapy.units import UL_PER_ML

OCCLUSION_ALARMS = ("no_flow", "under_infusion")
"""Alarms that answer a blocked catheter (the first raised ends the wait)."""


class OcclusionParams(Params):
    rate_ul_per_min: Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)] = 100.0
    """Set rate while the catheter is pinched (µL/min)."""
    settle_min: PositiveFloat = 1.0
    """Run this long before pinching."""
    max_wait_min: PositiveFloat = 10.0
    """Give up waiting for an alarm after this long (the result then says none came)."""
    release_min: PositiveFloat = 1.0
    """Collect the released bolus this long after opening the valve."""
    time_compression: Annotated[float, Field(ge=1, le=100_000, allow_inf_nan=False)] | None = None
    """Patient seconds per bench second for the patient-time figure (None: rig.toml's)."""


class OcclusionSample(Row):
    t_s: float
    sensor_ul_per_min: float


class OcclusionResult(Result):
    rate_ul_per_min: float
    alarm: str | None
    """The alarm the rig raised, or None if none came within max_wait_min."""
    time_to_alarm_s: float | None
    time_to_alarm_patient_min: float | None
    time_compression: float
    bolus_ul: float
    """Released after the valve opened, by the balance."""
    bolus_sensor_ul: float
    """The same, by the flow sensor's readings integrated."""
    samples: list[OcclusionSample]


def planned_s(params: OcclusionParams, _ul_per_step: float = 0.0) -> float:
    return (params.settle_min + params.max_wait_min / 2 + params.release_min) * 60.0


def run_occlusion(cb: CalibrationBench, params: OcclusionParams) -> OcclusionResult:
    """Run the occlusion test on *cb*; the valve is left open and the motor stopped."""
    minutes = params.settle_min + params.max_wait_min
    cb.require_volume(params.rate_ul_per_min * minutes, "the occlusion test")
    factor = params.time_compression or cb.time_compression
    cb.begin(planned_s(params))
    temperature_c, density = cb.water(params.temperature_c)
    cb.run_at(params.rate_ul_per_min)
    cb.report(f"settling at {params.rate_ul_per_min:g} µL/min")
    cb.wait(params.settle_min * 60.0)
    monitor = FlowMonitor(cb.ul_per_step, factor, flow_limits_for(cb.bench.config))
    monitor.set_rate(params.rate_ul_per_min, cb.now_s())
    monitor.restart(cb.now_s() - monitor.limits.settle_bench_s)  # the line has settled
    closed_s = cb.now_s()
    cb.pinch(True)
    cb.report("catheter pinched")
    samples: list[OcclusionSample] = []
    alarm = None
    try:
        while cb.now_s() - closed_s < params.max_wait_min * 60.0:
            cb.wait(SENSOR_PERIOD_S)
            reading = cb.flow()
            status = monitor.observe(
                cb.now_s(), cb.steps_issued, reading.flow_ul_per_min, reading.air_in_line
            )
            samples.append(
                OcclusionSample(
                    t_s=cb.now_s() - closed_s, sensor_ul_per_min=reading.flow_ul_per_min
                )
            )
            raised = [code for code in OCCLUSION_ALARMS if code in status.conditions]
            if raised:
                alarm = raised[0]
                break
    finally:
        cb.stop()  # the alarm stops the motor (and so does a failure)
    alarm_s = cb.now_s() - closed_s
    cb.report(f"{alarm or 'no alarm'} after {alarm_s:.1f} s; releasing")
    cb.tare()
    cb.pinch(False)
    released_ul = 0.0
    release_s = params.release_min * 60.0
    steps = max(1, round(release_s / SENSOR_PERIOD_S))
    for _ in range(steps):
        cb.wait(release_s / steps)
        released_ul += cb.flow().flow_ul_per_min * release_s / steps / 60.0
    bolus_g = cb.stable_mass_g()
    return OcclusionResult(
        procedure="occlusion",
        **cb.result_fields(temperature_c, density),
        rate_ul_per_min=params.rate_ul_per_min,
        alarm=alarm,
        time_to_alarm_s=alarm_s if alarm else None,
        time_to_alarm_patient_min=alarm_s * factor / 60.0 if alarm else None,
        time_compression=factor,
        bolus_ul=bolus_g / density * UL_PER_ML,
        bolus_sensor_ul=released_ul,
        samples=samples,
    )
