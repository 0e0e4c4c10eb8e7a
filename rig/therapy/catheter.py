"""What the catheter holds, and the dose that really reaches the patient.

The catheter (and the pump's tubing) holds a fixed volume of drug. Every microlitre the pump
pushes in at the reservoir end pushes the same volume out at the tip, oldest first: after a
refill with another concentration the patient first gets the old drug still in the line (the
reason for a bridge bolus), then the new one. The dose to the patient is that volume at the
concentration it really had, whatever the program says.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rig.common.inputs import StrictModel
from rig.therapy.units import dose_ug

DEFAULT_CATHETER_LENGTH_CM = 45.0
DEFAULT_CATHETER_UL_PER_CM = 2.2
DEFAULT_PUMP_TUBING_UL = 60.0
DEFAULT_CATHETER_UL = (
    DEFAULT_CATHETER_LENGTH_CM * DEFAULT_CATHETER_UL_PER_CM + DEFAULT_PUMP_TUBING_UL
)
"""A 45 cm catheter at 2.2 µL/cm plus 60 µL of pump tubing (the priming example's values)."""

VolumeUl = Annotated[float, Field(ge=0, allow_inf_nan=False)]
ConcentrationUgPerMl = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Parcel(StrictModel):
    """A stretch of the line holding one concentration."""

    volume_ul: VolumeUl
    concentration_ug_per_ml: ConcentrationUgPerMl


class CatheterContents(StrictModel):
    """The line's parcels from the tip back to the pump, and the dose delivered so far."""

    volume_ul: Annotated[float, Field(gt=0, allow_inf_nan=False)] = DEFAULT_CATHETER_UL
    parcels: list[Parcel]
    patient_ug: VolumeUl = 0.0

    @classmethod
    def filled(
        cls, concentration_ug_per_ml: float, volume_ul: float = DEFAULT_CATHETER_UL
    ) -> CatheterContents:
        """A line full of one concentration (a primed catheter)."""
        return cls(
            volume_ul=volume_ul,
            parcels=[Parcel(volume_ul=volume_ul, concentration_ug_per_ml=concentration_ug_per_ml)],
        )

    @property
    def tip_concentration_ug_per_ml(self) -> float:
        """What the patient receives now."""
        return self.parcels[0].concentration_ug_per_ml if self.parcels else 0.0

    def pushed(self, volume_ul: float, concentration_ug_per_ml: float) -> CatheterContents:
        """The line after *volume_ul* of drug at *concentration_ug_per_ml* entered at the pump."""
        if volume_ul <= 0:
            return self
        entering = Parcel(volume_ul=volume_ul, concentration_ug_per_ml=concentration_ug_per_ml)
        parcels = [*self.parcels, entering]
        out_ul, reached_ug = volume_ul, 0.0
        while out_ul > 0 and parcels:
            front = parcels[0]
            taken_ul = min(out_ul, front.volume_ul)
            reached_ug += dose_ug(taken_ul, front.concentration_ug_per_ml)
            out_ul -= taken_ul
            if taken_ul >= front.volume_ul:
                parcels.pop(0)
            else:
                parcels[0] = front.model_copy(update={"volume_ul": front.volume_ul - taken_ul})
        return self.model_copy(
            update={"parcels": _merged(parcels), "patient_ug": self.patient_ug + reached_ug}
        )


def _merged(parcels: list[Parcel]) -> list[Parcel]:
    """Neighbouring parcels of the same concentration as one (the list stays short)."""
    merged: list[Parcel] = []
    for parcel in parcels:
        if merged and merged[-1].concentration_ug_per_ml == parcel.concentration_ug_per_ml:
            last = merged[-1]
            merged[-1] = last.model_copy(update={"volume_ul": last.volume_ul + parcel.volume_ul})
        elif parcel.volume_ul > 0:
            merged.append(parcel)
    return merged
