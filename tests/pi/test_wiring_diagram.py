"""docs/wiring.svg and the README's wiring table match the pins of the shipped rig.toml."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rig.service.config import load_config

PROJECT_DIR = Path(__file__).resolve().parents[2]
SVG = PROJECT_DIR / "docs" / "wiring.svg"
README = PROJECT_DIR / "README.md"
NS = {"svg": "http://www.w3.org/2000/svg"}

# BCM GPIO number -> physical pin of the Raspberry Pi's 40-pin header (the Pi's published pinout).
BCM_TO_PIN = {
    2: 3, 3: 5, 4: 7, 17: 11, 27: 13, 22: 15, 10: 19, 9: 21, 11: 23, 5: 29, 6: 31, 13: 33,
    19: 35, 26: 37, 14: 8, 15: 10, 18: 12, 23: 16, 24: 18, 25: 22, 8: 24, 7: 26, 12: 32,
    16: 36, 20: 38, 21: 40,
}  # fmt: skip
I2C = {"i2c_sda": 2, "i2c_scl": 3}


def expected_wires() -> dict[str, int]:
    """Every signal wired to the header by the shipped rig.toml: its [pins] and the I2C bus."""
    config = load_config()
    wires = dict(config.pins.assignments())
    if config.flow_sensor.kind == "i2c":
        wires |= I2C
    return wires


@pytest.fixture(scope="module")
def svg() -> ET.Element:
    return ET.parse(SVG).getroot()


def header_pins(svg: ET.Element) -> dict[int, tuple[float, float]]:
    pins = {}
    for circle in svg.iterfind(".//svg:circle", NS):
        match = re.fullmatch(r"pin-(\d+)", circle.get("id", ""))
        if match:
            pins[int(match[1])] = (float(circle.get("cx")), float(circle.get("cy")))
    return pins


def wires(svg: ET.Element) -> dict[str, ET.Element]:
    return {group.get("data-signal"): group for group in svg.iterfind(".//svg:g[@data-signal]", NS)}


def first_point(group: ET.Element) -> tuple[float, float]:
    line = group.find("svg:polyline", NS)
    x, y = line.get("points").split()[0].split(",")
    return float(x), float(y)


def test_the_header_is_drawn_as_the_pi_numbers_it(svg):
    pins = header_pins(svg)
    assert sorted(pins) == list(range(1, 41))
    for number, (x, y) in pins.items():
        assert x == (750 if number % 2 else 790), f"pin {number} in the wrong column"
        assert y == 180 + 20 * ((number - 1) // 2), f"pin {number} in the wrong row"


def test_every_wire_of_rig_toml_and_no_other_is_drawn(svg):
    assert set(wires(svg)) == set(expected_wires())


@pytest.mark.parametrize(("signal", "bcm"), sorted(expected_wires().items()))
def test_each_wire_starts_at_the_header_pin_of_its_bcm_number(svg, signal, bcm):
    group = wires(svg)[signal]
    pin = BCM_TO_PIN[bcm]
    assert int(group.get("data-bcm")) == bcm, f"{signal}: diagram says BCM {group.get('data-bcm')}"
    assert int(group.get("data-pin")) == pin, f"{signal}: BCM {bcm} is header pin {pin}"
    assert first_point(group) == header_pins(svg)[pin], f"{signal}: the line leaves another pin"
    label = "".join(group.find("svg:text", NS).itertext())
    assert f"BCM {bcm}," in label and f"pin {pin}" in label


def test_the_diagram_is_drawn_not_typed(svg):
    lines = svg.findall(".//svg:polyline", NS) + svg.findall(".//svg:line", NS)
    assert len(lines) > 40 and len(svg.findall(".//svg:rect", NS)) > 20
    for text in svg.iterfind(".//svg:text", NS):
        content = "".join(text.itertext())
        assert not re.search(r"[─│┌┐└┘├┤]|-{3,}|\|.*\|", content), f"text art: {content!r}"


def readme_wiring_rows() -> list[tuple[str, list[int], list[int]]]:
    text = README.read_text()
    section = text[text.index("## Wiring") :]
    section = section[: section.index("\n## ", 3)]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d+( / \d+)*", cells[1]):
            bcms = [int(n) for n in cells[1].split(" / ")]
            pins = [int(n) for n in cells[2].split(" / ")]
            rows.append((cells[0], bcms, pins))
    return rows


def test_the_readme_wiring_table_agrees():
    rows = readme_wiring_rows()
    listed = [bcm for _name, bcms, _pins in rows for bcm in bcms]
    assert sorted(listed) == sorted(expected_wires().values())
    for name, bcms, pins in rows:
        assert [BCM_TO_PIN[bcm] for bcm in bcms] == pins, f"README row {name!r}"
