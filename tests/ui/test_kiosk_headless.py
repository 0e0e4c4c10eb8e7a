"""``itbrig kiosk`` on a machine with no display says so and what to do, instead of drawing
offscreen where nobody sees it."""

from __future__ import annotations

import ui.cli
from rig.cli import main

NO_DISPLAY = ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")


def test_no_display_says_what_is_happening_and_what_to_do(monkeypatch, tmp_path, capsys):
    for name in NO_DISPLAY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ui.cli, "DRI_DIR", tmp_path / "dri")  # no DRM device either
    assert main(["kiosk", "--no-sim", "--url", "http://127.0.0.1:9"]) == 1
    message = capsys.readouterr().err
    assert "no display here" in message
    assert "itbrig kiosk --screenshot DIR" in message and "SDL_VIDEODRIVER=kmsdrm" in message


def test_a_display_session_a_chosen_driver_or_a_drm_device_is_a_display(tmp_path):
    assert ui.cli.no_display({}, tmp_path)
    assert ui.cli.no_display({"DISPLAY": ":0"}, tmp_path) == ""
    assert ui.cli.no_display({"SDL_VIDEODRIVER": "kmsdrm"}, tmp_path) == ""
    (tmp_path / "card0").write_bytes(b"")  # a DRM device this user may open (a Pi's console)
    assert ui.cli.no_display({}, tmp_path) == ""
