"""Alarm catalogue: stable codes with IEC 60601-1-8 priorities, meanings and actions.

Codes are part of the API and of the event log: never rename one. ``stops_delivery`` alarms halt
the pump at once; ``blocks_bolus`` alarms refuse patient boluses while active; ``latched`` alarms
stay active until their condition clears, others are annunciated once (an event, not a state).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from rig.common.alarm_signals import SIGNALS, AlarmPriority, AlarmSignal

__all__ = [
    "CATALOGUE",
    "SIGNALS",
    "AlarmCode",
    "AlarmPriority",
    "AlarmSignal",
    "AlarmSpec",
    "alarm_spec",
    "highest_priority",
]


class AlarmCode(StrEnum):
    """Stable alarm codes."""

    LOW_RESERVOIR = "low_reservoir"
    EMPTY_RESERVOIR = "empty_reservoir"
    ERI = "eri"
    END_OF_SERVICE = "end_of_service"
    DOSE_LIMIT = "dose_limit"
    MOTOR_STALL = "motor_stall"
    OVER_INFUSION = "over_infusion"
    RUNAWAY = "runaway"
    UNDER_INFUSION = "under_infusion"
    OCCLUSION = "occlusion"
    NO_FLOW = "no_flow"
    FLOW_WHILE_STOPPED = "flow_while_stopped"
    SENSOR_FAULT = "sensor_fault"
    AIR_IN_LINE = "air_in_line"
    POWER_LOSS_RECOVERY = "power_loss_recovery"
    WATCHDOG = "watchdog"
    EMERGENCY_STOP = "emergency_stop"
    REFILL_DISCREPANCY = "refill_discrepancy"
    PLUNGER_AT_END = "plunger_at_end"
    LIMIT_SWITCH = "limit_switch"
    SELF_TEST_FAILED = "self_test_failed"
    STORAGE_FAILURE = "storage_failure"


@dataclass(frozen=True)
class AlarmSpec:
    """One catalogue entry."""

    code: AlarmCode
    priority: AlarmPriority
    title: str
    meaning: str
    action: str
    stops_delivery: bool
    blocks_bolus: bool = True
    latched: bool = True

    @property
    def signal(self) -> AlarmSignal:
        return SIGNALS[self.priority]


_H, _M, _L = AlarmPriority.HIGH, AlarmPriority.MEDIUM, AlarmPriority.LOW
_ENTRIES = [
    AlarmSpec(
        AlarmCode.LOW_RESERVOIR, _M, "Low reservoir",
        "The reservoir volume has reached the programmed low-reservoir threshold.",
        "Schedule a refill before the alarm date for an empty reservoir.",
        stops_delivery=False,
    ),
    AlarmSpec(
        AlarmCode.EMPTY_RESERVOIR, _H, "Reservoir empty",
        "The reservoir is empty: no drug is being delivered; withdrawal can follow within hours.",
        "Refill the pump now; watch the patient for baclofen withdrawal.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.ERI, _M, "Elective replacement indicator",
        "The battery has reached its elective replacement age; the pump stops 90 days later.",
        "Plan pump replacement before end of service.",
        stops_delivery=False, blocks_bolus=False,
    ),
    AlarmSpec(
        AlarmCode.END_OF_SERVICE, _H, "End of service",
        "The battery is at end of service: therapy has stopped.",
        "Replace the pump now; watch the patient for baclofen withdrawal.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.DOSE_LIMIT, _L, "Dose limit",
        "A bolus request was refused because it would pass a dose limit.",
        "No action on the pump; review the patient's bolus use and the program limits.",
        stops_delivery=False, blocks_bolus=False, latched=False,
    ),
    AlarmSpec(
        AlarmCode.MOTOR_STALL, _H, "Motor stall",
        "The drive does not move although steps are issued: no drug is being delivered.",
        "Stop, inspect the drive train and syringe; watch the patient for withdrawal.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.OVER_INFUSION, _H, "Over-infusion",
        "Measured flow is sustained above the programmed rate (more than +10 %).",
        "Delivery stopped; check the drive and calibration; watch the patient for overdose.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.RUNAWAY, _H, "Runaway",
        "Measured flow is far above the programmed rate (free flow or drive runaway).",
        "Delivery stopped; clamp the line; watch the patient for overdose.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.UNDER_INFUSION, _M, "Under-infusion",
        "Measured flow is sustained below the programmed rate (more than -10 %).",
        "Check the catheter for kinks or leaks and the drive for slipping.",
        stops_delivery=False,
    ),
    AlarmSpec(
        AlarmCode.OCCLUSION, _H, "Occlusion",
        "The line is blocked: pressure builds and no drug reaches the patient.",
        "Delivery stopped; find and clear the blockage; expect a bolus when it releases.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.NO_FLOW, _H, "No flow",
        "The motor runs but no flow is measured (stall or blocked line).",
        "Delivery stopped; check the drive, syringe and line.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.FLOW_WHILE_STOPPED, _H, "Flow while stopped",
        "Flow is measured although the motor is stopped (leak or free flow).",
        "Clamp the line; check for siphoning or a leak.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.SENSOR_FAULT, _M, "Flow sensor fault",
        "The flow sensor is silent or out of range: flow is not being verified.",
        "Check the sensor cable and connection; delivery continues unverified.",
        stops_delivery=False,
    ),
    AlarmSpec(
        AlarmCode.AIR_IN_LINE, _M, "Air in line",
        "The flow sensor reports air in the line.",
        "Remove the air from the line and re-prime.",
        stops_delivery=False,
    ),
    AlarmSpec(
        AlarmCode.POWER_LOSS_RECOVERY, _H, "Power-loss recovery",
        "The rig restarted after a power loss or crash and is stopped.",
        "Review the last program and the delivered volume, then confirm to resume.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.WATCHDOG, _H, "Watchdog",
        "The delivery loop stalled: the stepper was disabled.",
        "Delivery stopped; check the service log, then resume.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.EMERGENCY_STOP, _H, "Emergency stop",
        "The emergency-stop button was pressed.",
        "Release the button when safe, then resume.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.REFILL_DISCREPANCY, _M, "Refill discrepancy",
        "The volume withdrawn at refill differs from the expected volume by more than the "
        "tolerance (1 mL for a 20 mL pump, 2 mL for a 40 mL pump).",
        "Less withdrawn than expected: over-infusion, a pocket fill or a short fill; more: "
        "under-infusion or an entry error at the previous refill.",
        stops_delivery=False,
    ),
    AlarmSpec(
        AlarmCode.PLUNGER_AT_END, _H, "Plunger at end",
        "The bench syringe plunger reached its end-of-travel switch.",
        "Delivery stopped; refill or replace the bench syringe.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.LIMIT_SWITCH, _H, "Limit switch",
        "A limit switch is in an unexpected state.",
        "Delivery stopped; check the switches and the plunger position.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.SELF_TEST_FAILED, _H, "Self-test failed",
        "The power-on self-test found a part that does not work: delivery is blocked.",
        "Fix the part named in the message, then restart the rig service.",
        stops_delivery=True,
    ),
    AlarmSpec(
        AlarmCode.STORAGE_FAILURE, _H, "Storage failure",
        "The books cannot be written (disk full, read-only or failing): nothing can be recorded, "
        "so delivery was stopped and changes are refused.",
        "Free space or replace the storage; once the books can be written again, acknowledge "
        "and restart delivery.",
        stops_delivery=True,
    ),
]  # fmt: skip
CATALOGUE: dict[AlarmCode, AlarmSpec] = {entry.code: entry for entry in _ENTRIES}


def alarm_spec(code: str) -> AlarmSpec:
    """The catalogue entry of *code*; ValueError for unknown codes."""
    return CATALOGUE[AlarmCode(code)]


def highest_priority(codes: Iterable[str]) -> AlarmPriority | None:
    """The highest priority among active alarms (None when there are none)."""
    priorities = [alarm_spec(code).priority for code in codes]
    return max(priorities, key=lambda priority: priority.rank) if priorities else None
