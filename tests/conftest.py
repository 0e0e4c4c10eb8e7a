"""Shared fixtures: a fresh simulated pin factory for every test that asks for one."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from hal.pins import make_sim_factory


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
