"""Kiosk widgets: alarm banner, keypad form, PIN pad, reservoir gauge, trend plot, daily chart.

Drawing uses Kivy graphics instructions only; the look lives in ``kv/widgets.kv``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from kivy.clock import Clock
from kivy.graphics import Color, InstructionGroup, Line, Rectangle
from kivy.properties import (
    BooleanProperty,
    ListProperty,
    NumericProperty,
    ObjectProperty,
    StringProperty,
)
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.modalview import ModalView
from kivy.uix.togglebutton import ToggleButton
from kivy.uix.widget import Widget

from ui import format as fmt
from ui.forms import Field
from ui.keypad import BACK, CLEAR, KEYS, KeypadBuffer

IDLE_BANNER_RGBA = (0.12, 0.12, 0.12, 1)
_label_texture_update = Label.texture_update


def texture_update(self: Label, *args: Any) -> None:
    """Render a label's new text into a new texture instead of over the one on screen.

    Writing over a texture that frames already queued still draw makes the GL driver finish
    those frames first (Mesa's llvmpipe: ~90 ms of CPU on the development machine, once a
    second when the status changes the header); a new small texture costs an allocation."""
    core = getattr(self, "_label", None)
    if core is not None:
        core.texture = None
    _label_texture_update(self, *args)


def render_labels_into_new_textures() -> None:
    """Install :func:`texture_update` for every label of the kiosk (once, before the layout)."""
    Label.texture_update = texture_update


DIM_FACTOR = 0.25


class AlarmBanner(ButtonBehavior, Label):
    """The alarm bar on every screen: colour and flash rate of the highest active priority.

    A label that takes touches, not a Button: the shared Button look recolours a button while it
    is pressed, and the banner must keep its IEC colour whatever is done to it."""

    alarms = ListProperty([])
    priority = StringProperty("")
    flash_hz = NumericProperty(0)
    lit = BooleanProperty(True)
    bg_rgba = ListProperty(IDLE_BANNER_RGBA)
    fg_rgba = ListProperty([0.7, 0.7, 0.7, 1])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._flasher: Any = None
        self._style: fmt.BannerStyle | None = None
        self.on_alarms(self, self.alarms)

    def on_alarms(self, _instance: Any, alarms: list[dict[str, Any]]) -> None:
        ordered = fmt.active_alarms({"alarms": alarms})
        style = fmt.banner_style(ordered[0]["priority"]) if ordered else None
        if style == self._style and ordered:
            self.text = fmt.banner_text(ordered)
            return
        self._style = style
        if self._flasher is not None:
            self._flasher.cancel()
            self._flasher = None
        self.lit = True
        if style is None:
            self.priority, self.flash_hz = "", 0
            self.text = "No active alarms"
            self.bg_rgba, self.fg_rgba = IDLE_BANNER_RGBA, (0.7, 0.7, 0.7, 1)
            return
        self.priority = style.priority
        self.flash_hz = style.flash_hz or 0
        self.text = fmt.banner_text(ordered)
        self.fg_rgba = style.text_rgba
        self._paint()
        if style.flash_hz:
            self._flasher = Clock.schedule_interval(self._toggle, 0.5 / style.flash_hz)

    def _toggle(self, _dt: float) -> None:
        self.lit = not self.lit
        self._paint()

    def _paint(self) -> None:
        if self._style is None:
            return
        r, g, b, a = self._style.rgba
        k = 1.0 if self.lit else DIM_FACTOR
        self.bg_rgba = (r * k, g * k, b * k, a)


class ConfirmPopup(ModalView):
    """A question before an action that changes what the patient gets: Yes runs *on_yes*."""

    question = StringProperty("")
    yes_text = StringProperty("Yes")

    def __init__(self, question: str, yes_text: str, on_yes: Callable[[], None], **kwargs: Any):
        super().__init__(question=question, yes_text=yes_text, **kwargs)
        self._on_yes = on_yes

    def open(self, *_args: Any, **_kwargs: Any) -> None:
        super().open(animation=False)

    def answer(self, yes: bool) -> None:
        self.dismiss(animation=False)
        if yes:
            self._on_yes()


class PriorityChip(Label):
    """An alarm's priority on its IEC colour (red high, yellow medium, cyan low)."""

    priority = StringProperty("low")
    bg_rgba = ListProperty(IDLE_BANNER_RGBA)
    fg_rgba = ListProperty([1, 1, 1, 1])

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_priority(self, self.priority)

    def on_priority(self, _instance: Any, priority: str) -> None:
        style = fmt.banner_style(priority)
        self.bg_rgba, self.fg_rgba = style.rgba, style.text_rgba


class KeypadForm(BoxLayout):
    """Fields on the left (tap one to edit it), the numeric keypad on the right."""

    fields = ListProperty([])
    values = ObjectProperty({}, rebind=True)
    active = StringProperty("")
    display = StringProperty("")
    refused = BooleanProperty(False)
    message = StringProperty("")
    message_rgba = ListProperty([1, 1, 1, 1])
    summary = StringProperty("")
    """Live totals of the entries, shown under the fields (empty: no line)."""
    field_box = ObjectProperty(None)
    keypad_box = ObjectProperty(None)
    actions_box = ObjectProperty(None)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._buffer = KeypadBuffer()
        self._buttons: dict[str, ToggleButton] = {}
        Clock.schedule_once(lambda _dt: self._build_keys(), 0)

    def _build_keys(self) -> None:
        if self.keypad_box is None or self.keypad_box.children:
            return
        for key in KEYS:
            button = KeyButton(text="Del" if key == BACK else key, key=key)
            button.bind(on_release=lambda b: self.press(b.key))
            self.keypad_box.add_widget(button)

    def load(self, fields: tuple[Field, ...], values: dict[str, float | None]) -> None:
        """Show *fields* with their start *values*; the first field is active."""
        self.fields = list(fields)
        self.values = dict(values)
        self._buttons.clear()
        if self.field_box is not None:
            self.field_box.clear_widgets()
            for field in fields:
                button = ToggleButton(group=f"form-{id(self)}", allow_no_selection=False)
                button.field_key = field.key
                button.bind(on_release=lambda b: self.select(b.field_key))
                self._buttons[field.key] = button
                self.field_box.add_widget(button)
        self.select(fields[0].key if fields else "")

    def lock(self, key: str) -> None:
        """Show field *key* without letting it be edited."""
        self._buttons[key].disabled = True

    def select(self, key: str) -> None:
        """Make field *key* the one the keypad edits."""
        self.active = key
        field = self._field(key)
        if field is not None:
            self._buffer = KeypadBuffer(
                max_digits=4 if field.time_of_day else field.max_digits,
                max_decimals=0 if field.time_of_day else field.max_decimals,
            )
            self._buffer.set_value(self.values.get(key))
        for other, button in self._buttons.items():
            button.state = "down" if other == key else "normal"
        self._refresh()

    def press(self, key: str) -> None:
        """One keypad key for the active field."""
        if not self.active:
            return
        self.refused = not self._buffer.press(key)
        self.values = {**self.values, self.active: self._buffer.value}
        self._refresh()

    def clear(self) -> None:
        self.press(CLEAR)

    def _field(self, key: str) -> Field | None:
        return next((f for f in self.fields if f.key == key), None)

    def _refresh(self) -> None:
        for field in self.fields:
            button = self._buttons.get(field.key)
            if button is not None:
                shown = field.shown(self.values.get(field.key))
                button.text = f"{field.label}: {shown} {field.unit}".strip()
        field = self._field(self.active)
        if field is not None and field.time_of_day:
            self.display = f"{self._buffer.text or '0'} = {field.shown(self._buffer.value)}"
        else:
            self.display = f"{self._buffer.text or '0'} {field.unit if field else ''}".strip()


class KeyButton(Button):
    """One keypad key."""

    key = StringProperty("")


PIN_GLYPH = "*"
"""The masked PIN's glyph: one the kiosk's font draws (Roboto has no "●")."""


class PinPad(BoxLayout):
    """PIN entry: digits only, shown masked."""

    pin = StringProperty("")
    masked = StringProperty("")
    keypad_box = ObjectProperty(None)
    max_length = NumericProperty(8)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        Clock.schedule_once(lambda _dt: self._build_keys(), 0)

    def _build_keys(self) -> None:
        if self.keypad_box is None or self.keypad_box.children:
            return
        for key in (*KEYS[:9], CLEAR, "0", BACK):
            label = {BACK: "Del", CLEAR: "C"}.get(key, key)
            button = KeyButton(text=label, key=key)
            button.bind(on_release=lambda b: self.press(b.key))
            self.keypad_box.add_widget(button)

    def press(self, key: str) -> None:
        if key == CLEAR:
            self.pin = ""
        elif key == BACK:
            self.pin = self.pin[:-1]
        elif key.isdigit() and len(self.pin) < self.max_length:
            self.pin += key

    def on_pin(self, _instance: Any, pin: str) -> None:
        self.masked = PIN_GLYPH * len(pin)


class ReservoirGauge(Widget):
    """A vertical reservoir gauge: fill level and the low-reservoir threshold line."""

    fill = NumericProperty(0)
    low = NumericProperty(0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bind(pos=self._draw, size=self._draw, fill=self._draw, low=self._draw)

    def _draw(self, *_args: Any) -> None:
        x, y = self.pos
        w, h = self.size
        self.canvas.clear()
        with self.canvas:
            Color(0.25, 0.25, 0.25, 1)
            Rectangle(pos=(x, y), size=(w, h))
            Color(*((0.95, 0.6, 0.0, 1) if self.fill <= self.low else (0.2, 0.6, 1.0, 1)))
            Rectangle(pos=(x + 3, y + 3), size=(max(0, w - 6), max(0, (h - 6) * self.fill)))
            Color(1, 0.84, 0, 1)
            level = y + 3 + (h - 6) * self.low
            Line(points=[x, level, x + w, level], width=1.5)
            Color(0.8, 0.8, 0.8, 1)
            Line(rectangle=(x, y, w, h), width=1)


Sample = tuple[float, float | None, float | None, float | None, float]
"""(bench s, expected, measured, sensor reading, effective time compression): flows in
bench µL/min, None where there was no value."""


AXIS_LABEL_W = 90


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^n at or above *value* (axis tops that rarely change)."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    return next(step * scale for step in (1, 2, 5, 10) if step * scale >= value)


class TrendPlot(Widget):
    """Live flow over the last ``window_s`` bench seconds, in the patient's µL/h: expected
    (wide white band), measured over the window (green, on top, so both show when they agree)
    and the raw sensor reading (thin blue). Missing values leave gaps; the axes carry values
    and the effective time compression."""

    window_s = NumericProperty(60)
    start_s = NumericProperty(None, allownone=True)
    """Left edge fixed at this time (None: the window ends at the latest sample)."""
    patient_rates = BooleanProperty(True)
    """Samples are bench µL/min, shown as the patient's µL/h; False: shown as given, in
    ``unit``, against time in ``time_unit`` (the training screen's effect curve)."""
    time_unit = StringProperty("s")
    y_max = NumericProperty(1.0)
    y_floor = NumericProperty(1.0)
    """The lowest top of the y axis: a stopped pump's sensor noise stays a flat line at 0."""
    samples_drawn = NumericProperty(0)
    unit = StringProperty("µL/h")
    compression_text = StringProperty("")
    SERIES = (  # (index in a sample, colour, width), drawn in this order
        (1, (1, 1, 1, 0.7), 5.0),
        (3, (0.35, 0.55, 1.0, 1), 1.0),
        (2, (0.2, 1.0, 0.3, 1), 1.4),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples: deque[Sample] = deque(maxlen=4000)
        self.segments: dict[int, list[list[float]]] = {}
        with self.canvas:
            Color(0.08, 0.08, 0.08, 1)
            self._background = Rectangle()
            Color(0.3, 0.3, 0.3, 1)
            self._grid = [Line(points=[], width=1) for _ in range(3)]
        self._groups = {}
        for index, rgba, _width in self.SERIES:
            group = InstructionGroup()
            self.canvas.add(Color(*rgba))
            self.canvas.add(group)
            self._groups[index] = group
        self._y_labels = [self._axis_label() for _ in range(3)]
        self._x_labels = [self._axis_label() for _ in range(2)]
        self.bind(pos=self.redraw, size=self.redraw, window_s=self.redraw)

    def _axis_label(self) -> Label:
        label = Label(font_size=12, size=(AXIS_LABEL_W, 16), color=(0.75, 0.75, 0.75, 1))
        self.add_widget(label)
        return label

    def add_sample(
        self,
        t_s: float,
        expected: float | None,
        measured: float | None,
        sensor: float | None = None,
        compression: float | None = None,
    ) -> None:
        """Append one sample (bench seconds, bench µL/min, the effective compression) and redraw."""
        factor = compression or (self.samples[-1][4] if self.samples else 1.0)
        self.samples.append((t_s, expected, measured, sensor, factor))
        self.redraw()

    def clear(self) -> None:
        self.samples.clear()
        self.redraw()

    def redraw(self, *_args: Any) -> None:
        x, y = self.pos
        w, h = self.size
        self._background.pos, self._background.size = (x, y), (w, h)
        for k, line in enumerate(self._grid, start=1):
            level = y + h * k / 4
            line.points = [x, level, x + w, level]
        t_end = self.samples[-1][0] if self.samples else 0.0
        t_start = t_end - self.window_s if self.start_s is None else self.start_s
        shown = [s for s in self.samples if s[0] >= t_start]
        values = [
            self._shown_value(v, s[4]) for s in shown for v in (s[1], s[2], s[3]) if v is not None
        ]
        self.y_max = nice_ceiling(max(max(values, default=0.0) * 1.1, self.y_floor))
        scale_x, scale_y = w / self.window_s, (h - 4) / self.y_max
        self.segments = {}
        for index, _rgba, width in self.SERIES:
            runs: list[list[float]] = []
            run: list[float] = []
            for sample in shown:
                value = sample[index]
                if value is None or (self.patient_rates and not sample[4]):
                    if run:
                        runs.append(run)
                    run = []
                    continue
                # inside the box: a noisy reading below zero sits on the axis
                shown_value = min(max(self._shown_value(value, sample[4]), 0.0), self.y_max)
                run += [x + (sample[0] - t_start) * scale_x, y + 2 + shown_value * scale_y]
            if run:
                runs.append(run)
            group = self._groups[index]
            group.clear()
            for points in runs:
                group.add(Line(points=points, width=width))
            self.segments[index] = runs
        self.samples_drawn = len(shown)
        self._axes(shown)

    def _shown_value(self, value: float, compression: float) -> float:
        if not self.patient_rates:
            return value
        return value * 60 / compression if compression else 0.0

    def _axes(self, shown: list[Sample]) -> None:
        x, y = self.pos
        w, h = self.size
        for k, label in enumerate(self._y_labels):
            value = self.y_max * k / 2
            label.text = f"{value:g} {self.unit}" if k else "0"
            label.pos = (x + 2, y + (h - 16) * k / 2)
        self._x_labels[0].pos = (x + 2 + AXIS_LABEL_W, y + 1)
        self._x_labels[1].pos = (x + w - AXIS_LABEL_W - 2, y + 1)
        if not self.patient_rates:
            start = self.start_s or 0.0
            self.compression_text = ""
            self._x_labels[0].text = f"{start:g} {self.time_unit}"
            self._x_labels[1].text = f"{start + self.window_s:g} {self.time_unit}"
            return
        factor = shown[-1][4] if shown else 0.0
        span = fmt.patient_duration(self.window_s * factor) if factor else f"{self.window_s:g} s"
        self.compression_text = f"time ×{factor:.0f} (effective)" if factor else ""
        self._x_labels[0].text = f"−{span}"
        self._x_labels[1].text = "now"


class DailyChart(Widget):
    """Bar chart of delivered volume per patient day."""

    days = ListProperty([])
    bars_drawn = NumericProperty(0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._labels: list[Label] = []
        self.bind(pos=self._draw, size=self._draw, days=self._draw)

    def _draw(self, *_args: Any) -> None:
        for label in self._labels:
            self.remove_widget(label)
        self._labels.clear()
        self.canvas.clear()
        x, y = self.pos
        w, h = self.size
        days = list(self.days)[-14:]
        with self.canvas:
            Color(0.08, 0.08, 0.08, 1)
            Rectangle(pos=(x, y), size=(w, h))
        self.bars_drawn = len(days)
        if not days:
            return
        peak = max(float(d.get("volume_ml") or 0) for d in days) or 1.0
        slot = w / len(days)
        label_h = 22
        for index, day in enumerate(days):
            volume = float(day.get("volume_ml") or 0)
            bar_h = (h - 2 * label_h) * volume / peak
            left = x + index * slot + slot * 0.15
            with self.canvas:
                Color(0.2, 0.6, 1.0, 1)
                Rectangle(pos=(left, y + label_h), size=(slot * 0.7, bar_h))
            for text, top in (
                (str(day.get("day", ""))[-5:], y),
                (f"{volume:.2f}", y + label_h + bar_h),
            ):
                label = Label(
                    text=text, font_size=14, pos=(x + index * slot, top), size=(slot, label_h)
                )
                self._labels.append(label)
                self.add_widget(label)
