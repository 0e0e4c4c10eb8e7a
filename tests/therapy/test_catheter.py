"""The catheter's contents: old drug first after a change of concentration, exact doses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.therapy.catheter import DEFAULT_CATHETER_UL, CatheterContents


def test_a_primed_line_delivers_what_it_holds_then_what_follows():
    line = CatheterContents.filled(500.0, volume_ul=100.0)
    # 150 µL of 2000 µg/mL pushed in: 100 µL of the old 500 µg/mL leave first, then 50 µL new.
    after = line.pushed(150.0, 2000.0)
    assert after.patient_ug == pytest.approx(100 * 0.5 + 50 * 2.0)
    assert after.tip_concentration_ug_per_ml == 2000.0
    assert sum(p.volume_ul for p in after.parcels) == pytest.approx(100.0)


def test_default_volume_is_the_priming_examples_catheter():
    assert pytest.approx(45 * 2.2 + 60) == DEFAULT_CATHETER_UL


@given(
    pushes=st.lists(
        st.tuples(st.floats(0.0, 500.0), st.sampled_from([50.0, 500.0, 1000.0, 2000.0])),
        max_size=30,
    )
)
def test_the_line_keeps_its_volume_and_dose_is_conserved(pushes):
    line = CatheterContents.filled(500.0, volume_ul=159.0)
    held_ug = 159.0 * 0.5
    pushed_ug = 0.0
    for volume_ul, concentration in pushes:
        line = line.pushed(volume_ul, concentration)
        pushed_ug += volume_ul * concentration / 1000
    assert sum(p.volume_ul for p in line.parcels) == pytest.approx(159.0)
    in_line_ug = sum(p.volume_ul * p.concentration_ug_per_ml / 1000 for p in line.parcels)
    # What went in is what is in the line plus what reached the patient.
    assert held_ug + pushed_ug == pytest.approx(in_line_ug + line.patient_ug, rel=1e-9, abs=1e-9)
    assert len(line.parcels) <= len(pushes) + 1
