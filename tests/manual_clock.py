"""The simulated bench's manual clock, for tests: it moves only when the test moves it."""

from __future__ import annotations

from hal.sim.clock import ManualClock

__all__ = ["ManualClock"]
