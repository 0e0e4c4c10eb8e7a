"""Reservoir and battery: volumes, low/empty forecasts, battery life and the refill check.

Time to low reservoir and time to empty come from the delivery plan (exact integral of the
programmed rate, boluses included), so they are recomputed whenever the plan changes. Calendar
alarm dates are given to the minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator

from rig.common.inputs import InputError, StrictModel
from rig.therapy.units import UL_PER_ML, floor_to_minute, hours

if TYPE_CHECKING:
    from rig.therapy.plan import DeliveryPlan

RESERVOIR_CAPACITIES_ML = (20.0, 40.0)
MAX_CAPACITY_ML = max(RESERVOIR_CAPACITIES_ML)
DEFAULT_CAPACITY_ML = 20.0
DEFAULT_LOW_THRESHOLD_ML = 2.0
# Refill discrepancy above which the difference is significant, by reservoir capacity.
REFILL_TOLERANCE_ML = {20.0: 1.0, 40.0: 2.0}
# Volumes below this count as empty (float noise of the integral).
EMPTY_ML = 1e-9
DEFAULT_ERI_AGE_DAYS = 6 * 365.0
EOS_AFTER_ERI_DAYS = 90.0

VolumeMl = Annotated[float, Field(ge=0, le=MAX_CAPACITY_ML, allow_inf_nan=False)]


def check_reservoir_fits(
    capacity_ml: float,
    volume_ml: float,
    low_threshold_ml: float,
    *,
    volume_name: str = "volume_ml",
) -> None:
    """A reservoir of a real size holding what fits, with its low threshold below capacity.

    ValueError names the field (*volume_name* for the volume, as the caller calls it).
    """
    if capacity_ml not in RESERVOIR_CAPACITIES_ML:
        raise ValueError(
            f"capacity_ml: {capacity_ml:g} mL is not a reservoir size; allowed "
            + " or ".join(f"{c:g}" for c in RESERVOIR_CAPACITIES_ML)
        )
    if volume_ml > capacity_ml:
        raise ValueError(
            f"{volume_name}: {volume_ml:g} mL is more than the reservoir holds; allowed 0 to "
            f"{capacity_ml:g} mL"
        )
    if low_threshold_ml >= capacity_ml:
        raise ValueError(
            f"low_threshold_ml: {low_threshold_ml:g} mL must be below the capacity; allowed 0 "
            f"to less than {capacity_ml:g} mL"
        )


class ReservoirState(StrictModel):
    """The drug reservoir: capacity (20 or 40 mL), current volume and low-reservoir threshold."""

    capacity_ml: VolumeMl = DEFAULT_CAPACITY_ML
    volume_ml: VolumeMl = DEFAULT_CAPACITY_ML
    low_threshold_ml: VolumeMl = DEFAULT_LOW_THRESHOLD_ML

    @model_validator(mode="after")
    def _consistent(self) -> ReservoirState:
        check_reservoir_fits(self.capacity_ml, self.volume_ml, self.low_threshold_ml)
        return self

    @property
    def is_low(self) -> bool:
        return self.volume_ml <= self.low_threshold_ml

    @property
    def is_empty(self) -> bool:
        return self.volume_ml <= EMPTY_ML


class ReservoirForecast(StrictModel):
    """When the reservoir reaches its low threshold and when it is empty (None: never)."""

    volume_ml: float
    hours_to_low: float | None
    low_alarm_at: datetime | None
    hours_to_empty: float | None
    empty_at: datetime | None


def forecast_reservoir(
    plan: DeliveryPlan, now: datetime, reservoir: ReservoirState
) -> ReservoirForecast:
    """Time to low and to empty from *now* along *plan*, with calendar dates to the minute."""
    now_h = plan.hours_at(now)
    delivered_ul = plan.cumulative_volume_ul(now)

    def reached(volume_left_ml: float) -> tuple[float | None, datetime | None]:
        if volume_left_ml <= 0:
            return 0.0, floor_to_minute(now)
        at_h = plan.hours_at_cumulative_ul(delivered_ul + volume_left_ml * UL_PER_ML)
        if at_h is None:
            return None, None
        return max(0.0, at_h - now_h), floor_to_minute(plan.time_at_h(at_h))

    hours_to_low, low_at = reached(reservoir.volume_ml - reservoir.low_threshold_ml)
    hours_to_empty, empty_at = reached(reservoir.volume_ml)
    return ReservoirForecast(
        volume_ml=reservoir.volume_ml,
        hours_to_low=hours_to_low,
        low_alarm_at=low_at,
        hours_to_empty=hours_to_empty,
        empty_at=empty_at,
    )


class BatteryState(StrictModel):
    """The pump battery: elective replacement indicator at a configured age, then 90 days."""

    implanted_at: datetime
    eri_age_days: Annotated[float, Field(gt=0, le=20 * 365, allow_inf_nan=False)] = (
        DEFAULT_ERI_AGE_DAYS
    )
    eos_after_eri_days: Annotated[float, Field(gt=0, le=365, allow_inf_nan=False)] = (
        EOS_AFTER_ERI_DAYS
    )

    @property
    def eri_at(self) -> datetime:
        """Elective replacement indicator date."""
        return self.implanted_at + timedelta(days=self.eri_age_days)

    @property
    def end_of_service_at(self) -> datetime:
        """End of service: therapy stops."""
        return self.eri_at + timedelta(days=self.eos_after_eri_days)


class BatteryStatus(StrictModel):
    """Battery condition at one instant."""

    state: Literal["ok", "eri", "end_of_service"]
    age_days: float
    eri_at: datetime
    end_of_service_at: datetime
    days_to_end_of_service: float


def battery_status(battery: BatteryState, now: datetime) -> BatteryStatus:
    """Battery condition at *now*."""
    if now >= battery.end_of_service_at:
        state: Literal["ok", "eri", "end_of_service"] = "end_of_service"
    elif now >= battery.eri_at:
        state = "eri"
    else:
        state = "ok"
    return BatteryStatus(
        state=state,
        age_days=hours(now - battery.implanted_at) / 24,
        eri_at=battery.eri_at,
        end_of_service_at=battery.end_of_service_at,
        days_to_end_of_service=max(0.0, hours(battery.end_of_service_at - now) / 24),
    )


class RefillVerdict(StrictModel):
    """Comparison of the volume withdrawn at refill with the volume the pump expected."""

    expected_ml: float
    withdrawn_ml: float
    difference_ml: float
    tolerance_ml: float
    significant: bool
    suspicion: Literal["none", "over_infusion", "under_infusion"]
    causes: list[str] = Field(default_factory=list)
    """What could explain a significant difference (withdrawn less: ``over_infusion``,
    ``pocket_fill``, ``short_fill``; more: ``under_infusion``, ``fill_entry_error``)."""
    explanation: str


def refill_verdict(expected_ml: float, withdrawn_ml: float, capacity_ml: float) -> RefillVerdict:
    """Apply the refill discrepancy rule (> 1 mL for a 20 mL pump, > 2 mL for a 40 mL pump)."""
    tolerance_ml = REFILL_TOLERANCE_ML.get(capacity_ml)
    if tolerance_ml is None:
        raise InputError(
            f"capacity_ml: {capacity_ml:g} mL is not a reservoir size; allowed "
            + ", ".join(f"{c:g}" for c in RESERVOIR_CAPACITIES_ML)
        )
    for name, value in (("expected_ml", expected_ml), ("withdrawn_ml", withdrawn_ml)):
        if not 0 <= value <= capacity_ml:
            raise InputError(f"{name}: {value!r} mL is outside 0 to {capacity_ml:g} mL")
    difference_ml = withdrawn_ml - expected_ml
    significant = abs(difference_ml) > tolerance_ml
    suspicion: Literal["none", "over_infusion", "under_infusion"] = "none"
    causes: list[str] = []
    if not significant:
        explanation = (
            f"Withdrawn {withdrawn_ml:g} mL against {expected_ml:g} mL expected: the difference "
            f"({difference_ml:+.2f} mL) is within ±{tolerance_ml:g} mL."
        )
    elif difference_ml < 0:
        suspicion = "over_infusion"
        causes = ["over_infusion", "pocket_fill", "short_fill"]
        explanation = (
            f"Withdrawn {withdrawn_ml:g} mL is {-difference_ml:.2f} mL less than the "
            f"{expected_ml:g} mL expected (more than {tolerance_ml:g} mL): suspect over-infusion, "
            "or less went into the reservoir than was recorded at the previous refill (a pocket "
            "fill: drug under the skin; or a short fill). Assess the patient for overdose and, "
            "after a pocket fill, for withdrawal."
        )
    else:
        suspicion = "under_infusion"
        causes = ["under_infusion", "fill_entry_error"]
        explanation = (
            f"Withdrawn {withdrawn_ml:g} mL is {difference_ml:.2f} mL more than the "
            f"{expected_ml:g} mL expected (more than {tolerance_ml:g} mL): suspect under-infusion "
            "(motor stall, catheter occlusion), or more was filled than recorded at the previous "
            "refill (an entry error). Assess the patient for withdrawal."
        )
    return RefillVerdict(
        expected_ml=expected_ml,
        withdrawn_ml=withdrawn_ml,
        difference_ml=difference_ml,
        tolerance_ml=tolerance_ml,
        significant=significant,
        suspicion=suspicion,
        causes=causes,
        explanation=explanation,
    )
