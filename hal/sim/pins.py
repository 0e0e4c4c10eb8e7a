"""The bench pin: a gpiozero mock pin that a physical model can watch."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gpiozero.pins.mock import MockPWMPin

PinListener = Callable[[float], None]

STATE_HISTORY = 64


class BenchPin(MockPWMPin):
    """A MockFactory pin (PWM-capable) that tells listeners about every output change.

    gpiozero's MockPin records every state change in an unbounded list, which a stepper running
    thousands of steps a second would fill within minutes; this pin keeps only the last
    :data:`STATE_HISTORY` changes. Listeners are called synchronously, in the thread that changed
    the pin, with the new state (0.0..1.0): keep them short.
    """

    def __init__(self, factory, info) -> None:
        self._listeners: list[PinListener] = []
        super().__init__(factory, info)

    def clear_states(self) -> None:
        super().clear_states()
        self.states = deque(self.states, maxlen=STATE_HISTORY)

    def add_listener(self, listener: PinListener) -> None:
        """Call *listener(state)* whenever this pin's state changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: PinListener) -> None:
        self._listeners.remove(listener)

    def _change_state(self, value) -> bool:
        changed = super()._change_state(value)
        if changed:
            for listener in self._listeners:
                listener(float(value))
        return changed
