"""The rig service in-process on the simulated bench under a virtual clock: the same delivery
loop, step generator, physics, flow sensor and books, advanced as fast as the CPU allows.

For tests, the soak benchmark and fast demonstrations; never for the real bench.
"""

from __future__ import annotations

from pathlib import Path

from hal.bench import build_bench
from rig.service.books import RigStore
from rig.service.config import RigConfig, load_config
from rig.service.loop import RigService
from rig.therapy.drugs import parse_program


class BenchSeconds:
    """A bench clock that moves only when told to."""

    def __init__(self, now_s: float = 0.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s

    def set(self, now_s: float) -> None:
        self.now_s = now_s


class VirtualRig:
    """A :class:`RigService` whose bench time moves only through :meth:`run`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: RigConfig | None = None,
        time_compression: float | None = None,
    ) -> None:
        config = config or load_config()
        self.clock = BenchSeconds(1000.0)
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
        self.service.start(threads=False)
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
