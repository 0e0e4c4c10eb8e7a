"""The rig service in-process on the simulated bench under a virtual clock: the same delivery
loop, step generator, physics, flow sensor and books, advanced as fast as the CPU allows.

For tests, the soak benchmark and fast demonstrations; never for the real bench.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hal.bench import Bench, build_bench
from hal.sim.clock import ManualClock
from rig.service.books import RigStore
from rig.service.config import RigConfig, load_config
from rig.service.loop import RigService
from rig.service.selftest import run_selftest
from rig.therapy.drugs import parse_program

BENCH_FAULT_EXAMPLES: list[tuple[dict[str, object], str]] = [
    ({"occlusion_fraction": 1.0}, "no_flow"),
    ({"leak_fraction": 0.3}, "under_infusion"),
    ({"motor_stalled": True}, "no_flow"),
    ({"slip_fraction": 0.3}, "under_infusion"),
    ({"sensor_dropout": True}, "sensor_fault"),
    ({"air_bubble_ul": 200.0}, "air_in_line"),
    ({"spurious_steps_per_s": 1500.0}, "runaway"),
    ({"sensor_bias_ul_per_min": 100.0}, "over_infusion"),
]
"""Each bench fault (as ``POST /api/faults`` takes it) with the alarm it raises on a running
continuous program: for tests, the soak and demonstrations."""


class VirtualRig:
    """A :class:`RigService` whose bench time moves only through :meth:`run`.

    With *self_test* the power-on self-test runs first, as ``itbrig serve`` runs it, after
    *before_self_test* (if given) has had the chance to break a part of the bench.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        config: RigConfig | None = None,
        time_compression: float | None = None,
        self_test: bool = False,
        before_self_test: Callable[[Bench], None] | None = None,
    ) -> None:
        config = config or load_config()
        self.clock = ManualClock(1000.0)
        self.store = RigStore.open(data_dir / "rig.db")
        self.bench = build_bench(config, "sim", clock=self.clock, start_stepper=False)
        self.service = RigService(
            self.bench,
            self.store,
            time_compression=time_compression or config.therapy.time_compression,
            bench_clock=self.clock,
            max_bench_flow_ul_per_min=config.therapy.max_bench_flow_ul_per_min,
            reservoir_capacity_ml=config.therapy.reservoir_capacity_ml,
        )
        if before_self_test is not None:
            before_self_test(self.bench)
        if self_test:
            settings = config.selftest.model_copy(update={"signal_s": 0.01})
            report = run_selftest(self.bench, data_dir, settings, sleep=self.clock.advance)
            self.service.apply_self_test(report)
        self.service.start(threads=False)
        self.service.calibrations.sleep = self.run  # a calibration run moves the virtual clock
        self._closed = False

    def __enter__(self) -> VirtualRig:
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self.close()

    @property
    def now_s(self) -> float:
        return self.clock.now_s

    def run(self, bench_s: float) -> None:
        """Let *bench_s* bench seconds pass."""
        self.service.run_virtual(self.clock.now_s + bench_s, self.clock.set)

    def confirm(self, program: dict, role: str = "clinician") -> None:
        proposal = self.service.propose(parse_program(program))
        self.service.confirm(proposal.proposal_id, bool(proposal.warnings), role)

    def active_codes(self) -> list[str]:
        return list(self.service.alarms.active_codes)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.service.shutdown()
        self.bench.close()
        self.store.close()
