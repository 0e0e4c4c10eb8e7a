"""The engineer's Calibration screens: choose a test, follow it live (the flow against time and
the trumpet as it forms), read the results, apply or roll back, export the records.

Everything comes from the service (``GET /api/calibration``): procedures, progress, the plots as
series of points and the results as text lines; the kiosk only draws them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.graphics import Color, Line, Rectangle
from kivy.properties import DictProperty, ListProperty, NumericProperty, StringProperty
from kivy.uix.label import Label
from kivy.uix.widget import Widget

from ui.screens import KioskScreen

LEGEND_PX = 36
ACCURACY_RATES_UL_PER_MIN = (50.0, 100.0, 150.0)
EXPORTS = ("report.pdf", "samples.csv", "results.csv")
EXPORT_DIR = Path.home() / "itbrig-reports"
SERIES_RGBA = ((0.2, 1.0, 0.3, 1), (1, 1, 1, 1), (1.0, 0.6, 0.2, 1), (0.4, 0.7, 1.0, 1))
PROCEDURES = (
    ("volume", "Volume"),
    ("accuracy", "Accuracy"),
    ("rate", "Rate"),
    ("flow-sensor", "Flow sensor"),
    ("occlusion", "Occlusion"),
    ("bolus", "Bolus"),
)


def _hex(rgba: tuple[float, ...]) -> str:
    return "".join(f"{round(c * 255):02x}" for c in rgba[:3])


def eta_text(job: dict[str, Any] | None) -> str:
    if not job:
        return "No run yet"
    percent = round(100 * float(job.get("fraction") or 0))
    if job.get("state") != "running":
        return f"Run {job['run_id']} {job['state']} ({percent} %)"
    eta_s = float(job.get("eta_s") or 0)
    return f"{percent} %   ETA {int(eta_s // 60)}:{int(eta_s % 60):02d}   {job.get('message', '')}"


class SeriesPlot(Widget):
    """One plot of several series of (x, y) points, both axes fitted to the data."""

    plot = DictProperty({})
    title = StringProperty("")
    drawn = NumericProperty(0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.canvas:
            Color(0.08, 0.08, 0.08, 1)
            self._background = Rectangle()
        self._lines: list[Line] = []
        self._label = Label(font_size=13, halign="left", valign="top", markup=True)
        self.add_widget(self._label)
        self.bind(pos=self.redraw, size=self.redraw, plot=self.redraw)

    def redraw(self, *_args: Any) -> None:
        x, y = self.pos
        w, h = self.size
        self._background.pos, self._background.size = (x, y), (w, h)
        h = max(h - LEGEND_PX, 1)  # the title and legend sit above the lines
        for line in self._lines:
            self.canvas.remove(line)
        self._lines.clear()
        series = [s for s in self.plot.get("series", []) if s.get("points")]
        points = [p for s in series for p in s["points"]]
        self.title = self.plot.get("title", "")
        self.drawn = len(points)
        if not points:
            self._label.text = self.title or "Nothing to show yet"
            self._place_label()
            return
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        pad_y = (y1 - y0) * 0.1 or abs(y1) * 0.1 or 1.0
        y0, y1 = y0 - pad_y, y1 + pad_y
        span_x = (x1 - x0) or 1.0
        with self.canvas:
            for index, one in enumerate(series):
                Color(*SERIES_RGBA[index % len(SERIES_RGBA)])
                flat: list[float] = []
                for px, py in one["points"]:
                    flat += [
                        x + 4 + (px - x0) / span_x * (w - 8),
                        y + 4 + (py - y0) / (y1 - y0) * (h - 8),
                    ]
                if len(flat) == 2:
                    flat += [flat[0] + 2, flat[1]]
                self._lines.append(Line(points=flat, width=1.4))
        names = "  ".join(
            f"[color={_hex(SERIES_RGBA[i % len(SERIES_RGBA)])}]{s['name']}[/color]"
            for i, s in enumerate(series)
        )
        self._label.text = f"{self.title}\n{names}   y {y0 + pad_y:.4g} … {y1 - pad_y:.4g}"
        self._place_label()

    def _place_label(self) -> None:
        self._label.pos = self.pos
        self._label.size = self.size
        self._label.text_size = (self.width - 8, self.height - 4)


class CalibrationScreen(KioskScreen):
    """Choose a test, start or cancel it, watch it, read its results, apply it."""

    procedure = StringProperty("volume")
    rate_ul_per_min = NumericProperty(ACCURACY_RATES_UL_PER_MIN[1])
    job = DictProperty({})
    job_state = StringProperty("")
    job_procedure = StringProperty("")
    progress = NumericProperty(0)
    eta = StringProperty("No run yet")
    results_text = StringProperty("")
    in_force_text = StringProperty("")
    plots = ListProperty([])

    def on_enter(self, *_args: Any) -> None:
        self.reload()

    def update(self, status: dict[str, Any]) -> None:
        """Follow the run at the controller's status pace while this screen is shown."""
        if self.manager is not None and self.manager.current == self.name:
            self.reload()

    def reload(self) -> None:
        if self.ctl is not None:
            self.ctl.get("/api/calibration", self.show, self.fail)

    def show(self, listing: dict[str, Any]) -> None:
        """Show what ``GET /api/calibration`` answered."""
        job = listing.get("job") or {}
        self.job = job
        self.job_state = str(job.get("state", ""))
        self.job_procedure = str(job.get("procedure", ""))
        self.progress = float(job.get("fraction") or 0)
        self.eta = eta_text(job)
        self.results_text = "\n".join(job.get("summary") or [])
        self.plots = list(job.get("plots") or [])
        in_force = listing.get("in_force") or {}
        ratio = in_force.get("ul_per_step", 0) / (in_force.get("ul_per_step_nominal") or 1)
        self.in_force_text = (
            f"In force: {in_force.get('ul_per_step', 0) * 1000:.4f} nL/step "
            f"(×{ratio:.4f}, version {in_force.get('volume_version') or 'nominal'}); "
            f"sensor ×{in_force.get('flow_sensor_scale', 1):.4f} "
            f"{in_force.get('flow_sensor_offset_ul_per_min', 0):+.2f} µL/min"
        )

    def on_plots(self, _instance: Any, plots: list[dict[str, Any]]) -> None:
        for key, plot in zip(("plot_left", "plot_right"), [*plots, {}, {}], strict=False):
            self.ids[key].plot = plot

    def choose(self, procedure: str) -> None:
        self.procedure = procedure
        self.say("")

    def params(self) -> dict[str, Any]:
        if self.procedure == "accuracy":
            return {"rate_ul_per_min": self.rate_ul_per_min}
        return {}

    def start(self) -> None:
        body = {"procedure": self.procedure, "params": self.params()}
        self.say("Starting…")
        self.request("POST", "/api/calibration/runs", body, self._started)

    def _started(self, answer: dict[str, Any]) -> None:
        self.say(f"Run {answer['run_id']} started")
        self.reload()

    def cancel(self) -> None:
        self.request("POST", "/api/calibration/cancel", None, lambda _r: self.say("Cancelled"))

    def apply(self) -> None:
        run_id = self.job.get("run_id")
        if not run_id or self.job.get("state") != "done":
            self.fail("Apply needs a finished volume or flow-sensor run")
            return
        self.request(
            "POST",
            "/api/calibration/apply",
            {"run_id": run_id},
            lambda r: self.say(f"Applied: {r['kind']} version {r['version']}"),
        )


class CalibrationRunsScreen(KioskScreen):
    """The runs in the books: export any run's records; roll a calibration back."""

    runs = ListProperty([])
    selected = NumericProperty(0)
    runs_text = StringProperty("")

    def on_enter(self, *_args: Any) -> None:
        self.reload()

    def reload(self) -> None:
        if self.ctl is not None:
            self.ctl.get("/api/calibration/runs", self.show, self.fail)

    def show(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        if runs and not self.selected:
            self.selected = runs[0]["id"]
        self.on_selected()

    def on_selected(self, *_args: Any) -> None:
        self.runs_text = "\n".join(
            f"{'>' if r['id'] == self.selected else ' '} {r['id']:>4}  {r['procedure']:<12} "
            f"{r['state']:<10} {r['started_at_utc'][:16].replace('T', ' ')}  {r['role'] or ''}"
            for r in self.runs
        )

    def step(self, offset: int) -> None:
        ids = [r["id"] for r in self.runs]
        if ids:
            index = ids.index(self.selected) if self.selected in ids else 0
            self.selected = ids[max(0, min(len(ids) - 1, index + offset))]

    def rollback(self, kind: str) -> None:
        self.request(
            "POST",
            "/api/calibration/rollback",
            {"kind": kind},
            lambda r: self.say(f"{kind} back to version {r['version']}"),
        )

    def export(self) -> None:
        """Save the selected run's PDF report and CSV files under ``~/itbrig-reports``."""
        if not self.selected or self.ctl is None:
            self.fail("No run to export")
            return
        folder = EXPORT_DIR / f"run-{self.selected}"
        worker = self.ctl.worker

        def fetch(client: Any) -> str:
            folder.mkdir(parents=True, exist_ok=True)
            for name in EXPORTS:
                data = client.download(f"/api/calibration/runs/{self.selected}/{name}")
                (folder / name).write_bytes(data)
            return str(folder)

        self.busy = True
        worker.submit(fetch, lambda path: self.say(f"Saved to {path}"), lambda e: self.fail(str(e)))
