"""The rig service in-process on the simulated bench under a virtual clock: the same delivery
loop, step generator, physics, flow sensor and books, advanced as fast as the CPU allows."""

from __future__ import annotations

from pathlib import Path

from hal.bench import build_bench
from rig.service.books import RigStore
from rig.service.config import load_config
from rig.service.loop import RigService
from rig.therapy.drugs import parse_program
from tests.manual_clock import ManualClock


class VirtualRig:
    """A :class:`RigService` whose bench time moves only through :meth:`run`."""

    def __init__(self, data_dir: Path, time_compression: float = 1440.0, **config_changes) -> None:
        config = load_config()
        if config_changes:
            config = config.model_copy(update=config_changes)
        self.clock = ManualClock(1000.0)
        self.store = RigStore.open(data_dir / "rig.db")
        self.bench = build_bench(config, "sim", clock=self.clock, start_stepper=False)
        self.service = RigService(
            self.bench, self.store, time_compression=time_compression, bench_clock=self.clock
        )
        self.service.start(threads=False)
        self._closed = False

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
