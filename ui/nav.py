"""Which screens the kiosk has and who sees them in the navigation bar: one row per screen.

A role sees what it may do: nobody logged in and a trainee see what a patient and a trainee
may (Home, the patient-bolus button, alarms, history); a clinician (trainer) also programs,
refills, sets the clock, injects faults and runs scenarios (Faults and Training are the
trainer's alone); an engineer gets the
engineer views (bench units, calibration) but not fault injection. A screen with no roles is
reached from another screen only (the Finish screen from the wizard).
"""

from __future__ import annotations

from dataclasses import dataclass

from ui.calibration_screens import CalibrationRunsScreen, CalibrationScreen
from ui.pin_screen import PinScreen
from ui.screens import (
    AlarmsScreen,
    BolusScreen,
    FaultsScreen,
    FinishScreen,
    FlexScreen,
    HistoryScreen,
    HomeScreen,
    KioskScreen,
    LoginScreen,
    ProgramScreen,
    RefillScreen,
    SettingsScreen,
)
from ui.training_screens import PatientMonitorScreen, TrainerScreen

NOBODY, TRAINEE, CLINICIAN, ENGINEER = "", "trainee", "clinician", "engineer"
EVERYONE = frozenset({NOBODY, TRAINEE, CLINICIAN, ENGINEER})
LOGGED_IN = frozenset({TRAINEE, CLINICIAN, ENGINEER})
PROGRAMMERS = frozenset({CLINICIAN, ENGINEER})


@dataclass(frozen=True)
class NavEntry:
    """One screen: its name, class, navigation label and the roles whose bar shows it."""

    name: str
    screen: type[KioskScreen]
    label: str
    roles: frozenset[str]


SCREENS: tuple[NavEntry, ...] = (
    NavEntry("home", HomeScreen, "Home", EVERYONE),
    NavEntry("program", ProgramScreen, "Program", PROGRAMMERS),
    NavEntry("flex", FlexScreen, "", frozenset()),
    NavEntry("finish", FinishScreen, "", frozenset()),
    NavEntry("bolus", BolusScreen, "Bolus", LOGGED_IN),
    NavEntry("refill", RefillScreen, "Refill", PROGRAMMERS),
    NavEntry("alarms", AlarmsScreen, "Alarms", EVERYONE),
    NavEntry("history", HistoryScreen, "History", EVERYONE),
    NavEntry("faults", FaultsScreen, "Faults", frozenset({CLINICIAN})),
    NavEntry("training", TrainerScreen, "Training", frozenset({CLINICIAN})),
    NavEntry("monitor", PatientMonitorScreen, "", frozenset()),
    NavEntry("settings", SettingsScreen, "Settings", PROGRAMMERS),
    NavEntry("calibration", CalibrationScreen, "Calib.", frozenset({ENGINEER})),
    NavEntry("calibration_runs", CalibrationRunsScreen, "", frozenset()),
    NavEntry("pin", PinScreen, "PIN", LOGGED_IN),
    NavEntry("login", LoginScreen, "Login", EVERYONE),
)


def nav_for(role: str) -> list[NavEntry]:
    """The navigation bar of *role* ("" when nobody is logged in), in table order."""
    return [entry for entry in SCREENS if role in entry.roles]
