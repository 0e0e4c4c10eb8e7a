"""Shared fixtures: a fresh simulated pin factory for every test that asks for one."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from hal.pins import make_sim_factory


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end tests (marked ``slow(seconds=…)``, about how long each takes) first,
    longest first: pytest-xdist deals tests out round robin, so each long one starts at once on a
    worker of its own instead of being dealt out last and finishing the run alone."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return 0.0 if mark is None else float(mark.kwargs.get("seconds", 1.0))

    items.sort(key=seconds, reverse=True)


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
