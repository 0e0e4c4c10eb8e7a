"""A patient who responds to the baclofen that really reaches the spinal fluid.

Two linear compartments reproduce the drug label's timing (training.md): the spinal fluid holds
``A`` µg with first-order elimination (``dA/dt = R − k·A``, ``k = ln 2 / t½``) and an effect site
follows it (``dCe/dt = ke0·(A − Ce)``). The effect ``E`` is ``Ce`` relative to its steady state on
the patient's adapted daily dose (a naive patient: a reference dose), times a sensitivity. From
``E`` come the spasticity on the Modified Ashworth Scale and the overdose signs by bands. A
dependence state follows ``E`` slowly; when ``E`` falls below it the deficit drives withdrawal,
and a withdrawal load that builds over hours to days brings fever, tachycardia, an altered mental
state and rhabdomyolysis. Every number is a parameter of the patient file (:class:`PatientParams`).

Inputs: :meth:`PatientModel.advance` with the µg that reached the spinal fluid over an interval
(the pump's infusion, catheter contents first), :meth:`PatientModel.bolus` for a lumbar bolus,
:meth:`PatientModel.add_depot` for drug left under the skin (a pocket fill).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml

PATIENTS_DIR = Path(__file__).parent / "data" / "patients"
DEFAULT_PATIENT_FILE = PATIENTS_DIR / "adult.toml"
MAS_LEVELS = ("0", "1", "1+", "2", "3", "4")
"""The Modified Ashworth Scale, least to most tone; the model's tone score is an index into it."""

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MasLevel = Literal["0", "1", "1+", "2", "3", "4"]
Consciousness = Literal["alert", "confused", "voice", "pain", "unresponsive"]
"""AVPU, with ``confused`` for an altered mental state in a patient who is awake."""


class Pharmacokinetics(StrictModel):
    csf_half_life_h: Annotated[float, Field(ge=0.2, le=24, allow_inf_nan=False)] = 1.51
    effect_site_rate_per_h: Annotated[float, Field(ge=0.01, le=5, allow_inf_nan=False)] = 0.12

    @model_validator(mode="after")
    def _distinct_rates(self) -> Pharmacokinetics:
        if abs(self.elimination_per_h - self.effect_site_rate_per_h) < 1e-3:
            raise ValueError(
                "effect_site_rate_per_h must differ from the elimination rate ln2/csf_half_life_h "
                f"({self.elimination_per_h:.3f} /h)"
            )
        return self

    @property
    def elimination_per_h(self) -> float:
        return math.log(2) / self.csf_half_life_h


class Spasticity(StrictModel):
    untreated_mas: MasLevel = "3"
    half_relief_effect: Positive = 0.6
    hill: Annotated[float, Field(ge=0.5, le=8, allow_inf_nan=False)] = 2.0
    rebound_mas_per_deficit: NonNegative = 4.0


class OverdoseBands(StrictModel):
    drowsiness: Positive = 1.5
    somnolence: Positive = 2.0
    respiratory_depression: Positive = 4.0
    coma: Positive = 8.0

    @model_validator(mode="after")
    def _ordered(self) -> OverdoseBands:
        bands = [self.drowsiness, self.somnolence, self.respiratory_depression, self.coma]
        if bands != sorted(bands):
            raise ValueError(
                "bands must rise: drowsiness <= somnolence <= respiratory_depression <= coma"
            )
        return self


class Withdrawal(StrictModel):
    dependence_time_constant_h: Annotated[float, Field(ge=1, le=500, allow_inf_nan=False)] = 36.0
    pruritus_deficit: Positive = 0.15
    rebound_deficit: Positive = 0.3
    load_recovery_time_constant_h: Positive = 48.0
    full_load_deficit_h: Positive = 12.0
    altered_mental_state_load: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.55
    rhabdomyolysis_load: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.7


class Vitals(StrictModel):
    heart_rate_per_min: Annotated[float, Field(ge=30, le=200, allow_inf_nan=False)] = 76.0
    breathing_rate_per_min: Annotated[float, Field(ge=4, le=40, allow_inf_nan=False)] = 14.0
    temperature_c: Annotated[float, Field(ge=34, le=40, allow_inf_nan=False)] = 36.8
    withdrawal_heart_rate_rise_per_min: NonNegative = 54.0
    withdrawal_temperature_rise_c: NonNegative = 2.7
    withdrawal_breathing_rise_per_min: NonNegative = 8.0
    overdose_breathing_fall_per_effect: NonNegative = 2.5
    minimum_breathing_rate_per_min: Annotated[float, Field(ge=0, le=12, allow_inf_nan=False)] = 4
    fever_c: Annotated[float, Field(ge=37, le=41, allow_inf_nan=False)] = 38.0
    tachycardia_per_min: Annotated[float, Field(ge=80, le=200, allow_inf_nan=False)] = 100.0


class Depot(StrictModel):
    absorption_half_life_h: Positive = 6.0
    csf_fraction: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.02


class Screening(StrictModel):
    responder_mas_drop: Annotated[int, Field(ge=1, le=5)] = 2
    observation_h: Annotated[float, Field(gt=0, le=24, allow_inf_nan=False)] = 8.0


class PatientParams(StrictModel):
    """A patient file: every parameter of the model, each with its default."""

    name: Annotated[str, Field(min_length=1, max_length=80)] = "adult"
    adapted_ug_per_day: Annotated[float, Field(ge=0, le=5000, allow_inf_nan=False)] | None = None
    naive_reference_ug_per_day: Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)] = 100.0
    sensitivity: Annotated[float, Field(gt=0, le=20, allow_inf_nan=False)] = 1.0
    pharmacokinetics: Pharmacokinetics = Pharmacokinetics()
    spasticity: Spasticity = Spasticity()
    overdose: OverdoseBands = OverdoseBands()
    withdrawal: Withdrawal = Withdrawal()
    vitals: Vitals = Vitals()
    depot: Depot = Depot()
    screening: Screening = Screening()

    def adapted_to(self, program_ug_per_day: float) -> PatientParams:
        """These parameters with ``adapted_ug_per_day`` set (the program's dose when unset)."""
        if self.adapted_ug_per_day is not None:
            return self
        return self.model_copy(update={"adapted_ug_per_day": program_ug_per_day})


def parse_patient(data: dict, source: str = "patient") -> PatientParams:
    """Validate a patient file's contents; :class:`InputError` names each bad key."""
    try:
        return PatientParams.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, source)) from None


def load_patient(path: Path | str | None = None) -> PatientParams:
    """A patient file (TOML); the shipped default adult when *path* is None."""
    file_path = Path(path) if path is not None else DEFAULT_PATIENT_FILE
    return parse_patient(read_toml(file_path, "patient file"), str(file_path))


class Vital(StrictModel):
    heart_rate_per_min: float
    breathing_rate_per_min: float
    temperature_c: float
    consciousness: Consciousness


class PatientSnapshot(StrictModel):
    """The patient at one instant, as the timeline and the bedside monitor show it."""

    at_h: float
    effect: float
    mas: MasLevel
    signs: list[str]
    vitals: Vital
    csf_ug: float
    dependence: float
    withdrawal_load: float
    depot_ug: float


class PatientModel:
    """The patient's state, advanced by the drug that reaches the spinal fluid."""

    def __init__(self, params: PatientParams) -> None:
        if params.adapted_ug_per_day is None:
            raise InputError("adapted_ug_per_day: set it (0 for a naive patient) before the start")
        self.params = params
        pk = params.pharmacokinetics
        self._k = pk.elimination_per_h
        self._ke0 = pk.effect_site_rate_per_h
        adapted = params.adapted_ug_per_day
        reference = adapted if adapted > 0 else params.naive_reference_ug_per_day
        self._ce_reference_ug = reference / 24.0 / self._k
        steady_ug = adapted / 24.0 / self._k
        self.at_h = 0.0
        self.csf_ug = steady_ug
        self.effect_site_ug = steady_ug
        self.dependence = self.effect if adapted > 0 else 0.0
        self.withdrawal_load = 0.0
        self.depot_ug = 0.0
        self.reached_ug = 0.0

    @property
    def effect(self) -> float:
        return self.params.sensitivity * self.effect_site_ug / self._ce_reference_ug

    def bolus(self, dose_ug: float) -> None:
        """A dose straight into the spinal fluid (a lumbar puncture, the access port)."""
        self.csf_ug += dose_ug
        self.reached_ug += dose_ug

    def add_depot(self, dose_ug: float) -> None:
        """Drug left under the skin; absorbed slowly, a small part reaching the spinal fluid."""
        self.depot_ug += dose_ug

    def advance(self, duration_h: float, reached_ug: float = 0.0) -> None:
        """*duration_h* pass with *reached_ug* entering the spinal fluid evenly meanwhile."""
        if duration_h <= 0:
            self.bolus(reached_ug)
            return
        depot = self.params.depot
        absorbed_ug = self.depot_ug * -math.expm1(
            -math.log(2) * duration_h / depot.absorption_half_life_h
        )
        self.depot_ug -= absorbed_ug
        rate_ug_per_h = (reached_ug + absorbed_ug * depot.csf_fraction) / duration_h
        self.reached_ug += reached_ug + absorbed_ug * depot.csf_fraction
        effect_before = self.effect
        self._integrate(duration_h, rate_ug_per_h)
        mean_effect = 0.5 * (effect_before + self.effect)
        withdrawal = self.params.withdrawal
        follow = -math.expm1(-duration_h / withdrawal.dependence_time_constant_h)
        deficit = max(0.0, self.dependence - mean_effect)
        self.dependence += (mean_effect - self.dependence) * follow
        recovery_h = withdrawal.load_recovery_time_constant_h
        target = min(1.0, deficit * recovery_h / withdrawal.full_load_deficit_h)
        self.withdrawal_load += (target - self.withdrawal_load) * -math.expm1(
            -duration_h / recovery_h
        )
        self.at_h += duration_h

    def _integrate(self, duration_h: float, rate_ug_per_h: float) -> None:
        """Exact solution of the two compartments under a constant input rate."""
        k, ke0 = self._k, self._ke0
        steady_ug = rate_ug_per_h / k
        a0 = self.csf_ug - steady_ug
        c0 = self.effect_site_ug - steady_ug
        decay_k = math.exp(-k * duration_h)
        decay_e = math.exp(-ke0 * duration_h)
        self.csf_ug = steady_ug + a0 * decay_k
        self.effect_site_ug = steady_ug + c0 * decay_e + a0 * ke0 / (ke0 - k) * (decay_k - decay_e)

    @property
    def deficit(self) -> float:
        return max(0.0, self.dependence - self.effect)

    def mas_index(self) -> int:
        """The tone score as an index into :data:`MAS_LEVELS`."""
        spasticity = self.params.spasticity
        untreated = MAS_LEVELS.index(spasticity.untreated_mas)
        effect = self.effect
        relief = effect**spasticity.hill / (
            spasticity.half_relief_effect**spasticity.hill + effect**spasticity.hill
        )
        score = untreated * (1.0 - relief) + spasticity.rebound_mas_per_deficit * self.deficit
        return max(0, min(len(MAS_LEVELS) - 1, round(score)))

    def snapshot(self) -> PatientSnapshot:
        effect = self.effect
        bands = self.params.overdose
        withdrawal = self.params.withdrawal
        vitals = self.params.vitals
        load = self.withdrawal_load
        signs: list[str] = []
        if effect >= bands.drowsiness:
            signs += ["drowsiness", "dizziness"]
        if effect >= bands.somnolence:
            signs += ["somnolence", "hypotonia"]
        if effect >= bands.respiratory_depression:
            signs.append("respiratory_depression")
        if effect >= bands.coma:
            signs += ["seizures", "coma"]
        if self.deficit >= withdrawal.pruritus_deficit:
            signs += ["pruritus", "paresthesia"]
        if self.deficit >= withdrawal.rebound_deficit:
            signs.append("rebound_spasticity")
        heart_rate = vitals.heart_rate_per_min + vitals.withdrawal_heart_rate_rise_per_min * load
        temperature = vitals.temperature_c + vitals.withdrawal_temperature_rise_c * load
        excess = max(0.0, effect - bands.somnolence)
        breathing = max(
            vitals.minimum_breathing_rate_per_min,
            vitals.breathing_rate_per_min
            + vitals.withdrawal_breathing_rise_per_min * load
            - vitals.overdose_breathing_fall_per_effect * excess,
        )
        if temperature >= vitals.fever_c:
            signs.append("fever")
        if heart_rate >= vitals.tachycardia_per_min:
            signs.append("tachycardia")
        if load >= withdrawal.altered_mental_state_load:
            signs.append("altered_mental_state")
        if load >= withdrawal.rhabdomyolysis_load:
            signs.append("rhabdomyolysis")
        consciousness: Consciousness = "alert"
        if effect >= bands.coma:
            consciousness = "unresponsive"
        elif effect >= bands.respiratory_depression:
            consciousness = "pain"
        elif effect >= bands.somnolence:
            consciousness = "voice"
        elif "altered_mental_state" in signs:
            consciousness = "confused"
        return PatientSnapshot(
            at_h=round(self.at_h, 6),
            effect=round(effect, 4),
            mas=MAS_LEVELS[self.mas_index()],
            signs=signs,
            vitals=Vital(
                heart_rate_per_min=round(heart_rate, 1),
                breathing_rate_per_min=round(breathing, 1),
                temperature_c=round(temperature, 2),
                consciousness=consciousness,
            ),
            csf_ug=round(self.csf_ug, 3),
            dependence=round(self.dependence, 4),
            withdrawal_load=round(load, 4),
            depot_ug=round(self.depot_ug, 3),
        )
