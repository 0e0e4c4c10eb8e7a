"""The bridge after a refill at a new concentration, and the catheter stored with the pump.

After a fill at another concentration the catheter still holds the old drug. Delivery stays
stopped until a bridge bolus at the new concentration is programmed or "no bridge" is recorded
with its reason; the pending bridge is in the books, so a restart does not forget it. The
catheter model (length, µL per cm, pump tubing) is the one the last priming or bridge bolus
used, or the default implant's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from rig.common.inputs import InputError, StrictModel
from rig.service.books import RigStore
from rig.therapy.catheter import (
    DEFAULT_CATHETER_LENGTH_CM,
    DEFAULT_CATHETER_UL_PER_CM,
    DEFAULT_PUMP_TUBING_UL,
)
from rig.therapy.programs import Catheter, Program

BRIDGE_PENDING_KEY = "refill_bridge_pending"
CATHETER_MODEL_KEY = "catheter_model"
DEFAULT_CATHETER = Catheter(
    length_cm=DEFAULT_CATHETER_LENGTH_CM,
    ul_per_cm=DEFAULT_CATHETER_UL_PER_CM,
    pump_tubing_ul=DEFAULT_PUMP_TUBING_UL,
)


class NoBridgeRequest(StrictModel):
    """Start without a bridge bolus after a concentration change: the reason is recorded."""

    reason: Annotated[
        str,
        Field(
            min_length=3,
            max_length=200,
            pattern=r"\S",
            description="why no bridge bolus is needed (3 to 200 characters), kept in the books",
        ),
    ]


class PendingBridge(StrictModel):
    """A fill changed the concentration; no bridge bolus (or recorded "no bridge") yet."""

    old_concentration_ug_per_ml: float
    new_concentration_ug_per_ml: float
    filled_at: datetime

    def start_refusal(self) -> str:
        """Why delivery may not start, and what to do."""
        return (
            f"state: the reservoir was refilled at {self.new_concentration_ug_per_ml:g} µg/mL "
            f"(was {self.old_concentration_ug_per_ml:g} µg/mL) and the catheter still holds the "
            "old drug: program a bridge bolus (old concentration "
            f"{self.old_concentration_ug_per_ml:g}, new {self.new_concentration_ug_per_ml:g} "
            "µg/mL), or record no bridge with a reason (POST /api/refill/no-bridge), before "
            "starting"
        )

    def settled_by(self, program: Program) -> bool:
        """A bridge bolus from the old to the new concentration settles it."""
        root = program.root
        return (
            program.mode == "bridge_bolus"
            and program.concentration_ug_per_ml == self.new_concentration_ug_per_ml
            and getattr(root, "old_concentration_ug_per_ml", None)
            == self.old_concentration_ug_per_ml
        )


class BridgeBooks:
    """The pending bridge and the catheter model, read at start and written with each change."""

    def __init__(self, store: RigStore) -> None:
        self.store = store
        saved = store.get_state(BRIDGE_PENDING_KEY)
        self.pending = PendingBridge.model_validate(saved, strict=False) if saved else None
        catheter = store.get_state(CATHETER_MODEL_KEY)
        self.catheter = Catheter.model_validate(catheter) if catheter else DEFAULT_CATHETER

    def filled(self, pending: PendingBridge, role: str, patient_s: float) -> Callable[[], None]:
        """Book a fill at a new concentration; returns what to apply once the books have it."""
        self._write_pending(pending)
        self.store.add_event(
            "refill",
            f"concentration changed {pending.old_concentration_ug_per_ml:g} -> "
            f"{pending.new_concentration_ug_per_ml:g} ug/mL: bridge bolus pending",
            role=role,
            patient_s=patient_s,
            detail=pending.model_dump(mode="json"),
        )
        return lambda: setattr(self, "pending", pending)

    def confirmed(self, program: Program, role: str, patient_s: float) -> Callable[[], None]:
        """Book a confirmed program: the catheter of a priming or bridge bolus becomes the
        pump's; a bridge to the new concentration settles the pending one. Returns what to
        apply once the books have it."""
        catheter = getattr(program.root, "catheter", None)
        if catheter is not None:
            self.store.set_state({CATHETER_MODEL_KEY: catheter.model_dump(mode="json")})
        settled = self.pending is not None and self.pending.settled_by(program)
        if settled:
            self._write_pending(None)
            self.store.add_event(
                "refill", "bridge bolus programmed", role=role, patient_s=patient_s
            )

        def apply() -> None:
            if catheter is not None:
                self.catheter = catheter
            if settled:
                self.pending = None

        return apply

    def no_bridge(self, reason: str, role: str, patient_s: float) -> Callable[[], None]:
        """Book "no bridge" with its reason; refused (409) when no bridge is pending."""
        if self.pending is None:
            raise InputError("state: no bridge bolus is pending (no concentration change)")
        self._write_pending(None)
        self.store.add_event(
            "refill",
            f"no bridge bolus: {reason}",
            role=role,
            patient_s=patient_s,
            detail={"reason": reason, **self.pending.model_dump(mode="json")},
        )
        return lambda: setattr(self, "pending", None)

    def _write_pending(self, pending: PendingBridge | None) -> None:
        self.store.set_state(
            {BRIDGE_PENDING_KEY: pending.model_dump(mode="json") if pending else None}
        )

    def pending_status(self) -> dict[str, Any] | None:
        return self.pending.model_dump(mode="json") if self.pending else None

    def catheter_status(self) -> dict[str, Any]:
        """The pump's catheter model and its volume (what priming and bridge boluses push)."""
        return {**self.catheter.model_dump(mode="json"), "volume_ul": self.catheter.volume_ul}
