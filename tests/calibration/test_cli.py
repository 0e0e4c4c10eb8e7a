"""``itbrig calibrate ... --fast``: the JSON outsiders check, saving and reusing a calibration,
and bad input refused with a message naming it."""

from __future__ import annotations

import json

import pytest

from rig.cli import main
from tests.calibration.conftest import TRUE_RATIO

SHORT = ["--duration-min", "12", "--startup-min", "4", "--windows-min", "2,5"]


def test_volume_then_accuracy_with_the_saved_calibration(wide_bore_file, tmp_path, capsys):
    saved = tmp_path / "volume.json"
    args = ["calibrate", "volume", "--config", str(wide_bore_file), "--fast", "--json"]
    assert main([*args, "--save", str(saved), "--blank-s", "0"]) == 0
    volume = json.loads(capsys.readouterr().out)
    assert volume["ul_per_step_measured"] / volume["ul_per_step_nominal"] == pytest.approx(
        TRUE_RATIO, rel=0.003
    )
    assert {"coefficient", "ul_per_step_u95", "intercept_ul", "residuals_ul"} <= volume.keys()
    assert json.loads(saved.read_text()) == volume

    accuracy = ["calibrate", "accuracy", "--config", str(wide_bore_file), "--fast", "--json"]
    accuracy += ["--rate-ul-per-min", "120", *SHORT, "--use-calibration", str(saved)]
    limits = tmp_path / "limits.toml"
    limits.write_text("accuracy_mean_error_pct = 0.5\ntrumpet_pct = 0.0001\n")
    record = tmp_path / "record"
    assert main([*accuracy, "--report", str(record), "--limits", str(limits)]) == 0
    after = json.loads(capsys.readouterr().out)
    pdf = (record / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page ") == 2  # summary, plots
    samples = (record / "samples.csv").read_text().splitlines()
    assert samples[0] == "t_min,mass_g" and len(samples) == 1 + 25
    results = (record / "results.csv").read_text()
    assert f"mean_error_pct,{after['mean_error_pct']}" in results
    assert "in_force.source," + str(saved) in results
    assert "mean error A," in results and ",± 0.5 %,True" in results
    assert '"Ep, P = 2 min",' in results and ",False" in results  # the too-tight trumpet limit
    assert abs(after["mean_error_pct"]) <= 0.5
    assert [w["window_min"] for w in after["windows"]] == [2, 5]
    assert set(after["windows"][0]) == {"window_min", "ep_max_pct", "ep_min_pct"}
    assert len(after["samples"]) == 25
    assert set(after["samples"][1]) == {"t_min", "mass_g"}
    assert after["samples"][1]["mass_g"] > 0


def test_the_table_without_json(wide_bore_file, capsys):
    args = ["calibrate", "volume", "--config", str(wide_bore_file), "--fast"]
    assert main([*args, "--volumes-ul", "20,40,80", "--blank-s", "0"]) == 0
    out = capsys.readouterr().out
    assert "measured / nominal" in out and "residual µL" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rate-ul-per-min", "-3"], "rate_ul_per_min: Input should be greater than 0"),
        (["--rate-ul-per-min", "100", "--windows-min", "2,x"], "--windows-min: 'x' is not"),
        (["--rate-ul-per-min", "100", "--duration-min", "30"], "at least the longest window"),
        (["--rate-ul-per-min", "100", "--sample-min", "0.7"], "whole number of samples"),
    ],
)
def test_bad_parameters_are_named(extra, message, capsys):
    assert main(["calibrate", "accuracy", "--fast", *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_not_a_volume_calibration_is_refused(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"procedure": "accuracy"}))
    args = ["calibrate", "accuracy", "--fast", "--rate-ul-per-min", "50"]
    assert main([*args, "--use-calibration", str(other)]) == 2
    assert "not a saved volume calibration" in capsys.readouterr().err


def test_bad_limits_are_named(wide_bore_file, tmp_path, capsys):
    limits = tmp_path / "limits.toml"
    limits.write_text("accuracy_mean_error = 5\n")
    args = ["calibrate", "bolus", "--fast", "--count", "2", "--report", str(tmp_path / "r")]
    assert main([*args, "--limits", str(limits)]) == 2
    assert "accuracy_mean_error: Extra inputs are not permitted" in capsys.readouterr().err
