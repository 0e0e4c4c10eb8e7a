"""The numeric entry behind every on-screen keypad: digits, one decimal point, backspace, clear."""

from __future__ import annotations

from dataclasses import dataclass

KEYS = ("7", "8", "9", "4", "5", "6", "1", "2", "3", ".", "0", "back")
BACK = "back"
CLEAR = "clear"


@dataclass
class KeypadBuffer:
    """What has been typed on a keypad so far, with the rules of a clinical programmer keypad.

    At most ``max_digits`` digits and ``max_decimals`` digits after the point; ``max_decimals=0``
    refuses the point. Leading zeros collapse (``007`` reads ``7``). Keys that break a rule are
    ignored and :meth:`press` returns False, so the screen can signal the refusal.
    """

    text: str = ""
    max_digits: int = 7
    max_decimals: int = 2

    def press(self, key: str) -> bool:
        """Apply one key (``0``-``9``, ``.``, ``back``, ``clear``); False when it was refused."""
        if key == CLEAR:
            self.text = ""
            return True
        if key == BACK:
            if not self.text:
                return False
            self.text = self.text[:-1]
            return True
        if key == ".":
            if self.max_decimals == 0 or "." in self.text:
                return False
            self.text = (self.text or "0") + "."
            return True
        if len(key) != 1 or not key.isdigit():
            return False
        digits = sum(ch.isdigit() for ch in self.text)
        if digits >= self.max_digits:
            return False
        if "." in self.text and len(self.text.split(".")[1]) >= self.max_decimals:
            return False
        self.text = key if self.text == "0" else self.text + key
        return True

    @property
    def value(self) -> float | None:
        """The number typed, or None when nothing (or only a point) was typed."""
        if not self.text or self.text == ".":
            return None
        return float(self.text)

    def set_value(self, value: float | None) -> None:
        """Preload a value (for editing an existing setting)."""
        if value is None:
            self.text = ""
            return
        text = f"{value:.{self.max_decimals}f}" if self.max_decimals else f"{round(value)}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        self.text = text
