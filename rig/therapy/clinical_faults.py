"""The clinical faults of real ITB pumps, beside the bench's physical ones (hal.sim.bench).

Each entry: the real cause, what the implant would show (mostly nothing until the patient or the
next refill shows it) and what the rig does when a scenario sets it (rig.service.training).
Sources: training.md (FDA recall 2011, ISMP, HSA 2021, returned-pump analyses) and domain.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ClinicalFault(StrEnum):
    WRONG_CONCENTRATION = "wrong_concentration"
    POCKET_FILL = "pocket_fill"
    ACCESS_PORT_INJECTION = "access_port_injection"
    CATHETER_OCCLUSION = "catheter_occlusion"
    CATHETER_DISCONNECTION = "catheter_disconnection"
    OVER_INFUSION = "over_infusion"
    INTERMITTENT_STALL = "intermittent_stall"
    LOW_BATTERY_RESET = "low_battery_reset"
    MRI_STALL = "mri_stall"
    UG_PER_HOUR_ERROR = "ug_per_hour_error"
    UNFINISHED_PROGRAMMING = "unfinished_programming"


@dataclass(frozen=True)
class FaultEntry:
    code: ClinicalFault
    title: str
    cause: str
    implant_shows: str
    rig_does: str
    params: dict[str, str]
    """Parameters a scenario event may give, with what each means."""


CATALOGUE: tuple[FaultEntry, ...] = (
    FaultEntry(
        ClinicalFault.WRONG_CONCENTRATION,
        "Wrong concentration at refill",
        "A vial of another strength drawn up at refill (e.g. 2000 instead of 500 µg/mL).",
        "Nothing: the pump delivers the programmed volume; the dose is off by the ratio.",
        "The next fill draws from a supply of that concentration; the catheter carries it to "
        "the patient after the old drug in the line.",
        {"concentration_ug_per_ml": "what the supply really holds"},
    ),
    FaultEntry(
        ClinicalFault.POCKET_FILL,
        "Pocket fill",
        "The needle misses the fill port and drug goes into the subcutaneous pocket "
        "(~1 per 10 000 refills; FDA class I recall 2011).",
        "Nothing at the time; the reservoir holds less than recorded, so it empties early and "
        "LESS is withdrawn than expected at the next refill.",
        "Takes the fraction of the reservoir out of the syringe (after the next fill, or at once) "
        "and puts it in a subcutaneous depot the patient absorbs slowly.",
        {"fraction": "share of the fill that went under the skin (0-1)"},
    ),
    FaultEntry(
        ClinicalFault.ACCESS_PORT_INJECTION,
        "Injection into the catheter access port",
        "The refill needle enters the catheter access port instead of the fill port (fatal "
        "cases, ISMP 2004).",
        "Nothing: the drug bypasses the reservoir.",
        "The injected drug and the catheter's contents reach the spinal fluid at once.",
        {"volume_ml": "volume injected", "concentration_ug_per_ml": "its concentration"},
    ),
    FaultEntry(
        ClinicalFault.CATHETER_OCCLUSION,
        "Kinked or occluded catheter",
        "A kink, an occlusion or a catheter tip in scar tissue.",
        "Nothing: normal pump data; under-dosing shows in the patient and at the next refill.",
        "Only the open fraction of the pumped dose reaches the spinal fluid (with bench = true "
        "the rig's pinch valve also narrows the line, so its flow sensor sees it).",
        {"fraction": "share blocked (0-1)", "bench": "also occlude the bench line (true/false)"},
    ),
    FaultEntry(
        ClinicalFault.CATHETER_DISCONNECTION,
        "Catheter disconnection or fracture",
        "The catheter separates from the pump or breaks; drug leaks into the tissues.",
        "Nothing: the pump runs normally.",
        "What the pump delivers goes to a subcutaneous depot instead of the spinal fluid.",
        {},
    ),
    FaultEntry(
        ClinicalFault.OVER_INFUSION,
        "Runaway over-infusion",
        "The pump delivers more than programmed (labelling: more than 14.5 % above the rate).",
        "Nothing until the reservoir runs low early; less is withdrawn at refill.",
        "The patient receives the factor times what the pump books; the syringe loses the "
        "extra volume, so the reservoir empties early.",
        {"factor": "delivered / programmed (> 1)"},
    ),
    FaultEntry(
        ClinicalFault.INTERMITTENT_STALL,
        "Intermittent motor stall",
        "Shaft wear (59 % of returned pumps), internal shorting (14 %), gear corrosion (2 %).",
        "Motor stall logged with stall-recovery events; a 3 s two-tone critical alarm.",
        "Stalls the bench motor for stalled_h of every period_h (each stall and recovery in "
        "the event log); the rig's flow monitor sees the missing flow.",
        {"period_h": "hours between stalls", "stalled_h": "hours each stall lasts"},
    ),
    FaultEntry(
        ClinicalFault.LOW_BATTERY_RESET,
        "Low-battery reset",
        "An older pump's battery sags; the pump resets and its rate goes to a very low level.",
        "A critical alarm; the rate is reset to a minimum (withdrawal follows).",
        "Reprograms the pump to the minimum continuous dose and raises the battery alarm.",
        {"dose_ug_per_day": "the minimum dose after the reset"},
    ),
    FaultEntry(
        ClinicalFault.MRI_STALL,
        "MRI stall",
        "The scanner's field stops the rotor during the scan.",
        "Nothing during the scan; recovery may take 2-24 h.",
        "Stalls the bench motor for recovery_h hours, then frees it.",
        {"recovery_h": "hours until the motor turns again"},
    ),
    FaultEntry(
        ClinicalFault.UG_PER_HOUR_ERROR,
        "µg/h entered for µg/day",
        "A flex step of 60 µg per hour entered where 60 µg per day was meant (ISMP).",
        "Nothing: the pump does what it was told, 24 times the intended dose.",
        "Confirms the program with its daily dose multiplied by 24 (warnings accepted).",
        {},
    ),
    FaultEntry(
        ClinicalFault.UNFINISHED_PROGRAMMING,
        "Unfinished programming session",
        "The programmer is taken away before the Finish screen is confirmed (HSA 2021).",
        "The pump stays stopped: no alarm until the patient shows withdrawal.",
        "Stops delivery, leaving the pump stopped.",
        {},
    ),
)

CLINICAL_ACTIONS: dict[str, str] = {
    "assess_patient": "assess the patient: vital signs, tone (MAS), overdose and withdrawal signs",
    "interrogate_pump": "interrogate the pump: program, reservoir, alarms and logs",
    "locate_fill_port": "locate the fill port with the template and feel the needle stop",
    "verify_concentration": "check the drug, the concentration and the volume against the order",
    "suspect_pocket_fill": "suspect a pocket fill: stop, aspirate the pocket, observe the patient",
    "catheter_study": "order a catheter study (imaging, access-port aspiration)",
    "give_oral_baclofen": "give oral baclofen against withdrawal while the pump is fixed",
    "support_breathing": "support breathing: airway, oxygen, ventilation",
    "empty_reservoir": "empty the pump's reservoir (suspected overdose)",
    "emergency_referral": "call for help: send the patient to emergency care",
    "schedule_pump_replacement": "schedule the pump's replacement",
    "lumbar_bolus": "give a screening test dose by lumbar puncture (dose_ug)",
    "responder_decision": "decide the screening: responder or non_responder (value)",
}
"""What a trainee may record beside the rig's own actions (program, start, stop, refill)."""

PUMP_ACTIONS: dict[str, str] = {
    "program_confirmed": "a program confirmed (mode, dose_ug_per_day, concentration_ug_per_ml)",
    "start": "delivery started",
    "stop": "delivery stopped",
    "refill_withdrawn": "the withdrawn volume entered (withdrawn_ml, significant)",
    "refill_fill": "the reservoir filled (volume_ml, concentration_ug_per_ml)",
    "alarms_acknowledged": "alarms acknowledged",
}
"""The rig's actions, read from its event log."""


PARAM_RANGES: dict[ClinicalFault, dict[str, tuple[float | None, float, float]]] = {
    ClinicalFault.WRONG_CONCENTRATION: {"concentration_ug_per_ml": (None, 1.0, 2000.0)},
    ClinicalFault.POCKET_FILL: {"fraction": (1.0, 0.0, 1.0)},
    ClinicalFault.ACCESS_PORT_INJECTION: {
        "volume_ml": (None, 0.01, 40.0),
        "concentration_ug_per_ml": (None, 1.0, 2000.0),
    },
    ClinicalFault.CATHETER_OCCLUSION: {"fraction": (1.0, 0.0, 1.0)},
    ClinicalFault.OVER_INFUSION: {"factor": (2.0, 1.0, 20.0)},
    ClinicalFault.INTERMITTENT_STALL: {
        "period_h": (None, 0.1, 240.0),
        "stalled_h": (None, 0.0, 240.0),
    },
    ClinicalFault.LOW_BATTERY_RESET: {"dose_ug_per_day": (10.0, 0.0, 2000.0)},
    ClinicalFault.MRI_STALL: {"recovery_h": (6.0, 0.1, 48.0)},
}
"""Each fault's numeric parameters: (default or None if required, lowest, highest)."""
FLAG_PARAMS = {ClinicalFault.CATHETER_OCCLUSION: {"bench"}}


def fault_params(fault: ClinicalFault, params: dict[str, object]) -> dict[str, float | bool]:
    """The fault's parameters with their defaults, checked; ValueError names what is wrong."""
    ranges = PARAM_RANGES.get(fault, {})
    flags = FLAG_PARAMS.get(fault, set())
    unknown = sorted(set(params) - set(ranges) - flags)
    if unknown:
        allowed = ", ".join(sorted(set(ranges) | flags)) or "none"
        raise ValueError(f"{fault.value}: unknown parameter {unknown[0]!r}; allowed {allowed}")
    checked: dict[str, float | bool] = {flag: params.get(flag) is True for flag in flags}
    for key, (default, low, high) in ranges.items():
        value = params.get(key, default)
        if value is None:
            raise ValueError(f"{fault.value}: parameter {key} is required ({low:g} to {high:g})")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ValueError(f"{fault.value}: {key} must be a number from {low:g} to {high:g}")
        checked[key] = float(value)
    return checked


def fault_entry(code: str) -> FaultEntry:
    return next(entry for entry in CATALOGUE if entry.code == code)
