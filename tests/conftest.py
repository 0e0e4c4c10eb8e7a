"""Shared fixtures: a fresh simulated pin factory for every test that asks for one."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from hal.pins import make_sim_factory


def _slow_seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("slow")
    return 0.0 if mark is None else float(mark.kwargs.get("seconds", 1.0))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deal the long end-to-end tests (marked ``slow(seconds=…)``) out evenly over the workers.

    pytest-xdist's ``worksteal`` mode first splits the collection into one contiguous chunk per
    worker (each the remainder divided by the workers left), then lets idle workers take the
    tail of the busiest queue. So each long test goes first in the chunk with the least long
    work so far: it starts at once, on a worker of its own, and the short tests balance around
    it. Only the order changes; every worker computes the same one.
    """
    worker_input = getattr(config, "workerinput", None)  # set in pytest-xdist's workers
    workers = int(worker_input["workercount"]) if worker_input else 0
    slow = sorted((item for item in items if _slow_seconds(item)), key=_slow_seconds, reverse=True)
    if workers < 2 or not slow:
        return
    rest = iter([item for item in items if not _slow_seconds(item)])
    firsts: list[list[pytest.Item]] = [[] for _ in range(workers)]
    load_s = [0.0] * workers
    for item in slow:
        chunk = load_s.index(min(load_s))
        firsts[chunk].append(item)
        load_s[chunk] += _slow_seconds(item)
    ordered: list[pytest.Item] = []
    for chunk in range(workers):
        size = (len(items) - len(ordered)) // (workers - chunk)
        ordered += firsts[chunk]
        ordered += [next(rest) for _ in range(max(0, size - len(firsts[chunk])))]
    ordered += list(rest)
    items[:] = ordered


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    """A MockFactory of bench pins, installed as gpiozero's default and reset afterwards."""
    factory = make_sim_factory()
    previous = Device.pin_factory
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        # MockFactory pins live in a class-wide table: close this test's devices now, not when
        # the garbage collector gets to them during a later test.
        gc.collect()
        factory.reset()
        Device.pin_factory = previous
