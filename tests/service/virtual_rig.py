"""The rig service in-process on the simulated bench under a virtual clock: the same delivery
loop, step generator, physics, flow sensor and books, advanced as fast as the CPU allows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hal.bench import Bench, build_bench
from rig.service.books import RigStore
from rig.service.config import load_config
from rig.service.loop import RigService
from rig.service.selftest import run_selftest
from rig.therapy.drugs import parse_program
from tests.manual_clock import ManualClock


class VirtualRig:
    """A :class:`RigService` whose bench time moves only through :meth:`run`.

    With *self_test* the power-on self-test runs first, as ``itbrig serve`` runs it, after
    *before_self_test* (if given) has had the chance to break a part of the bench.
    """

    def __init__(
        self,
        data_dir: Path,
        time_compression: float = 1440.0,
        *,
        self_test: bool = False,
        before_self_test: Callable[[Bench], None] | None = None,
        **config_changes,
    ) -> None:
        config = load_config()
        if config_changes:
            config = config.model_copy(update=config_changes)
        self.clock = ManualClock(1000.0)
        self.store = RigStore.open(data_dir / "rig.db")
        self.bench = build_bench(config, "sim", clock=self.clock, start_stepper=False)
        self.service = RigService(
            self.bench, self.store, time_compression=time_compression, bench_clock=self.clock
        )
        if before_self_test is not None:
            before_self_test(self.bench)
        if self_test:
            settings = config.selftest.model_copy(update={"signal_s": 0.01})
            report = run_selftest(self.bench, data_dir, settings, sleep=self.clock.advance)
            self.service.apply_self_test(report)
        self.service.start(threads=False)

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
        self.service.shutdown()
        self.bench.close()
        self.store.close()
