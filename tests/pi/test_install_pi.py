"""install.sh's Raspberry Pi branch, run for real against a temporary root.

``ITBRIG_ROOT`` points every system path install.sh touches (``/etc``, ``/var/lib``, ``/boot``,
``/proc/device-tree/model``) into a temporary directory that holds a Pi's model file, firmware
config and kernel command line and an ``/etc/group`` with the Pi's groups. The system commands
it runs (``sudo``, ``systemctl``, ``raspi-config``, ``udevadm``, ``usermod``, ``getent``,
``apt-get``, ``dpkg-query``) are recording shims first on ``PATH``, which keep their state (the
enabled units, the firmware settings, the group members, the installed packages) in that root
or beside it. ``ITBRIG_SKIP_PIP=1`` keeps pip out (the test's own .venv is used as it is); it
exists for this test only. Everything else (``install``, ``sed``, ``itbrig config``) is real.
"""

from __future__ import annotations

import getpass
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from hal.udev import udev_rules
from rig.service.config import DEFAULT_CONFIG_PATH, load_config

PROJECT_DIR = Path(__file__).resolve().parents[2]
INSTALL_SH = PROJECT_DIR / "install.sh"
USER = getpass.getuser()
MODEL = b"Raspberry Pi 5 Model B Rev 1.0\x00"
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 rootwait\n"
CONFIG_TXT = "# For more options and information see config.txt(5)\ndtparam=audio=on\n[all]\n"
PI_GROUPS = ("gpio", "i2c", "dialout", "video", "render", "input")
KIVY_PACKAGES = ("libmtdev1", "libgl1", "libegl1", "libgles2", "libegl-mesa0", "libgl1-mesa-dri")

SHIMS = {
    "sudo": r"""
echo "sudo $*" >>"$SHIM_LOG"
exec "$@"
""",
    "systemctl": r"""
echo "systemctl $*" >>"$SHIM_LOG"
state="$SHIM_STATE/systemd"
mkdir -p "$state"
for file in "$state/enabled" "$state/active"; do [[ -e "$file" ]] || : >"$file"; done
[[ -f "$state/default" ]] || echo graphical.target >"$state/default"
args=()
for arg in "$@"; do [[ "$arg" == --quiet ]] || args+=("$arg"); done
case "${args[0]}" in
  daemon-reload) ;;
  enable)
    for unit in "${args[@]:1}"; do
      grep -qx "$unit" "$state/enabled" || echo "$unit" >>"$state/enabled"
    done ;;
  is-enabled) grep -qx "${args[1]}" "$state/enabled" ;;
  start) grep -qx "${args[1]}" "$state/active" || echo "${args[1]}" >>"$state/active" ;;
  is-active) grep -qx "${args[1]}" "$state/active" ;;
  get-default) cat "$state/default" ;;
  set-default) echo "${args[1]}" >"$state/default" ;;
  *) echo "systemctl shim: unexpected $*" >&2; exit 99 ;;
esac
""",
    "raspi-config": r"""
echo "raspi-config $*" >>"$SHIM_LOG"
config="$ITBRIG_ROOT/boot/firmware/config.txt"
cmdline="$ITBRIG_ROOT/boot/firmware/cmdline.txt"
[[ "$1" == nonint ]] || exit 99
case "$2 ${3:-}" in
  "get_i2c ") grep -qx 'dtparam=i2c_arm=on' "$config" && echo 0 || echo 1 ;;
  "do_i2c 0") echo 'dtparam=i2c_arm=on' >>"$config" ;;
  "get_serial_hw ") grep -qx 'enable_uart=1' "$config" && echo 0 || echo 1 ;;
  "do_serial_hw 0") echo 'enable_uart=1' >>"$config" ;;
  "get_serial_cons ") grep -q 'console=serial0' "$cmdline" && echo 0 || echo 1 ;;
  "do_serial_cons 1") sed -i 's/console=serial0,[0-9]* //' "$cmdline" ;;
  *) echo "raspi-config shim: unexpected $*" >&2; exit 99 ;;
esac
""",
    "udevadm": r"""
echo "udevadm $*" >>"$SHIM_LOG"
""",
    "getent": r"""
echo "getent $*" >>"$SHIM_LOG"
[[ "$1" == group ]] || exit 99
grep "^$2:" "$ITBRIG_ROOT/etc/group" || exit 2
""",
    "usermod": r"""
echo "usermod $*" >>"$SHIM_LOG"
[[ "$1" == -aG ]] || exit 99
sed -i -E "/^$2:/ { s/:$/:$3/; t; s/$/,$3/ }" "$ITBRIG_ROOT/etc/group"
""",
    "apt-get": r"""
echo "apt-get $*" >>"$SHIM_LOG"
[[ "$1" == install ]] || exit 0
for arg in "${@:2}"; do [[ "$arg" == -* ]] || echo "$arg" >>"$SHIM_STATE/dpkg"; done
""",
    "dpkg-query": r"""
echo "dpkg-query $*" >>"$SHIM_LOG"
[[ -e "$SHIM_STATE/dpkg" ]] || : >"$SHIM_STATE/dpkg"
grep -qx "${!#}" "$SHIM_STATE/dpkg" && printf 'install ok installed' || exit 1
""",
}

QUERIES = re.compile(
    r"^(dpkg-query -W .*|getent group \S+|raspi-config nonint get_\w+|"
    r"systemctl (get-default|is-enabled --quiet \S+|is-active --quiet \S+))$"
)
"""Commands that only look: the whole log of a second run must be made of these."""


class PiRoot:
    """A temporary root for install.sh, its shims, and what they recorded."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.state = base / "state"
        self.bin = base / "bin"
        self.log = base / "commands.log"
        for directory in (self.root, self.state, self.bin):
            directory.mkdir()
        (self.root / "proc/device-tree").mkdir(parents=True)
        (self.root / "proc/device-tree/model").write_bytes(MODEL)
        (self.root / "boot/firmware").mkdir(parents=True)
        (self.root / "boot/firmware/cmdline.txt").write_text(CMDLINE)
        (self.root / "boot/firmware/config.txt").write_text(CONFIG_TXT)
        (self.root / "etc").mkdir()
        groups = ["root:x:0:", *(f"{g}:x:{900 + i}:" for i, g in enumerate(PI_GROUPS))]
        (self.root / "etc/group").write_text("\n".join(groups) + "\n")
        for name, body in SHIMS.items():
            shim = self.bin / name
            shim.write_text("#!/bin/bash\nset -u\n" + body.lstrip("\n"))
            shim.chmod(0o755)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """install.sh *args* against this root; the commands it ran start a fresh log."""
        self.log.write_text("")
        env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "ITBRIG_ROOT": str(self.root),
            "ITBRIG_SKIP_PIP": "1",
            "ITBRIG_USER": USER,
            "SHIM_LOG": str(self.log),
            "SHIM_STATE": str(self.state),
        }
        return subprocess.run(
            [str(INSTALL_SH), *args], capture_output=True, text=True, env=env, timeout=300
        )

    def commands(self) -> list[str]:
        return self.log.read_text().splitlines()

    def snapshot(self) -> dict[str, tuple]:
        """Every path under the root and the shims' state: type, mode, owner, times, content."""
        entries: dict[str, tuple] = {}
        for top in (self.root, self.state):
            for path in sorted([top, *top.rglob("*")]):
                info = path.lstat()
                content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
                key = f"{top.name}/{path.relative_to(top)}"
                entries[key] = (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns, content)
        return entries

    def text(self, path: str) -> str:
        return (self.root / path).read_text()

    def mode(self, path: str) -> str:
        return oct((self.root / path).stat().st_mode & 0o7777)


@pytest.fixture
def pi(tmp_path) -> PiRoot:
    return PiRoot(tmp_path)


def rendered_unit(name: str) -> str:
    text = (PROJECT_DIR / "systemd" / name).read_text()
    for placeholder, value in {
        "@VENV@": str(PROJECT_DIR / ".venv"),
        "@PROJECT@": str(PROJECT_DIR),
        "@USER@": USER,
        "@UID@": str(os.getuid()),
    }.items():
        text = text.replace(placeholder, value)
    return text


@pytest.mark.slow(seconds=25)
@pytest.mark.timeout(300)
def test_every_file_lands_where_it_should_and_a_second_run_changes_nothing(pi):
    first = pi.run()
    assert first.returncode == 0, first.stderr + first.stdout
    commands = pi.commands()

    # Units, rendered for this checkout and user; the kiosk's session and its PAM stack.
    for unit in ("itbrig.service", "itbrig-kiosk.service"):
        installed = pi.text(f"etc/systemd/system/{unit}")
        assert installed == rendered_unit(unit)
        assert not re.search(r"@[A-Z]+@", installed)
        assert pi.mode(f"etc/systemd/system/{unit}") == "0o644"
    kiosk = pi.text("etc/systemd/system/itbrig-kiosk.service")
    assert (
        "ExecStart="
        + str(PROJECT_DIR / ".venv/bin/itbrig")
        + (" kiosk --url http://127.0.0.1:8470\n")
        in kiosk
    )
    for line in (
        "TTYPath=/dev/tty1",
        "PAMName=itbrig-kiosk",
        f"Environment=XDG_RUNTIME_DIR=/run/user/{os.getuid()}",
        "SupplementaryGroups=video render input",
        "Restart=always",
        "Wants=itbrig.service",
        "Environment=SDL_VIDEODRIVER=kmsdrm",
    ):
        assert line + "\n" in kiosk
    assert "Requires=" not in kiosk and "BindsTo=" not in kiosk and "PartOf=" not in kiosk
    pam = (PROJECT_DIR / "systemd/itbrig-kiosk.pam").read_text()
    assert pi.text("etc/pam.d/itbrig-kiosk") == pam
    assert "session  required  pam_systemd.so" in pi.text("etc/pam.d/itbrig-kiosk")

    # Config and books: the shipped rig.toml, readable; the books the service user's alone.
    assert pi.text("etc/itbrig/rig.toml") == DEFAULT_CONFIG_PATH.read_text()
    assert pi.mode("etc/itbrig") == "0o755" and pi.mode("etc/itbrig/rig.toml") == "0o600"
    books = pi.root / "var/lib/itbrig"
    assert pi.mode("var/lib/itbrig") == "0o700"
    assert books.stat().st_uid == os.getuid()

    # udev rules from rig.toml: the balance's adapter gets its stable name.
    rules = pi.text("etc/udev/rules.d/60-itbrig.rules")
    assert rules == udev_rules(load_config())
    assert 'SYMLINK+="itbrig-balance"' in rules
    assert "udevadm control --reload-rules" in commands
    assert "udevadm trigger --subsystem-match=tty --action=add" in commands

    # Buses the Raspberry Pi OS way; the console never blanks; groups for service and kiosk.
    assert "raspi-config nonint do_i2c 0" in commands
    assert "dtparam=i2c_arm=on" in pi.text("boot/firmware/config.txt").splitlines()
    assert not any("serial" in c for c in commands if c.startswith("raspi-config"))
    cmdline = pi.text("boot/firmware/cmdline.txt")
    assert cmdline == CMDLINE.rstrip("\n") + " consoleblank=0\n"
    for group in PI_GROUPS:
        assert f"usermod -aG {group} {USER}" in commands
        assert re.search(rf"^{group}:x:\d+:{USER}$", pi.text("etc/group"), re.M)

    # systemd: reloaded, both units enabled, the rig service started, no desktop at boot.
    for command in (
        "systemctl daemon-reload",
        "systemctl set-default multi-user.target",
        "systemctl enable itbrig.service",
        "systemctl enable itbrig-kiosk.service",
        "systemctl start itbrig.service",
    ):
        assert command in commands
    assert (pi.state / "systemd/enabled").read_text().split() == [
        "itbrig.service",
        "itbrig-kiosk.service",
    ]
    # Debian packages: Kivy's and i2c-tools; pip never ran.
    installs = [c for c in commands if c.startswith("apt-get install")]
    assert len(installs) == 1
    assert installs[0].split()[-7:] == [*KIVY_PACKAGES, "i2c-tools"]
    assert "ITBRIG_SKIP_PIP=1: using" in first.stdout
    assert "reboot to apply" in first.stdout

    # Again: every file, mode, owner and time as it was; nothing but queries ran.
    before = pi.snapshot()
    second = pi.run()
    assert second.returncode == 0, second.stderr + second.stdout
    assert pi.snapshot() == before
    changing = [c for c in pi.commands() if not QUERIES.match(c)]
    assert changing == []
    assert "raspi-config nonint get_i2c" in pi.commands()
    assert "reboot" not in second.stdout


@pytest.mark.slow(seconds=15)
@pytest.mark.timeout(300)
def test_a_balance_on_the_pis_uart_enables_the_serial_port_and_keeps_the_lab_s_rig_toml(pi):
    (pi.root / "etc/itbrig").mkdir()
    lab_config = '[balance]\nport = "/dev/serial0"\n\n[kiosk]\nrotation = 180\n'
    (pi.root / "etc/itbrig/rig.toml").write_text(lab_config)
    blanking = CMDLINE.replace("rootwait", "consoleblank=600 rootwait")
    (pi.root / "boot/firmware/cmdline.txt").write_text(blanking)
    result = pi.run()
    assert result.returncode == 0, result.stderr + result.stdout
    commands = pi.commands()
    assert pi.text("etc/itbrig/rig.toml") == lab_config
    assert "raspi-config nonint do_serial_hw 0" in commands
    assert "raspi-config nonint do_serial_cons 1" in commands
    assert "enable_uart=1" in pi.text("boot/firmware/config.txt").splitlines()
    cmdline = pi.text("boot/firmware/cmdline.txt")
    assert "console=serial0" not in cmdline
    assert "consoleblank=0 rootwait" in cmdline and "consoleblank=600" not in cmdline
    rules = pi.text("etc/udev/rules.d/60-itbrig.rules")
    assert "SYMLINK" not in rules and "names /dev/serial0 itself" in rules
    before = pi.snapshot()
    assert pi.run().returncode == 0
    assert pi.snapshot() == before
    assert [c for c in pi.commands() if not QUERIES.match(c)] == []


@pytest.mark.timeout(300)
def test_a_broken_rig_toml_stops_the_install_naming_the_key(pi):
    (pi.root / "etc/itbrig").mkdir()
    (pi.root / "etc/itbrig/rig.toml").write_text("[kiosk]\nrotation = 45\n")
    result = pi.run()
    assert result.returncode == 2
    assert "kiosk.rotation: Input should be 0, 90, 180 or 270" in result.stderr
    assert "fix /etc/itbrig/rig.toml" in result.stderr
    assert not (pi.root / "etc/systemd").exists()
    assert not any(c.startswith("systemctl") for c in pi.commands())


@pytest.mark.timeout(300)
def test_off_a_pi_nothing_of_the_pi_branch_runs(pi):
    (pi.root / "proc/device-tree/model").write_bytes(b"Generic x86 board\x00")

    def root_only(snapshot: dict) -> dict:
        return {path: entry for path, entry in snapshot.items() if path.startswith("root/")}

    before = root_only(pi.snapshot())
    result = pi.run()
    assert result.returncode == 0, result.stderr
    assert root_only(pi.snapshot()) == before
    assert not (pi.root / "etc/itbrig").exists()
    assert all(c.startswith(("dpkg-query", "apt-get")) for c in pi.commands())
    assert not any("i2c-tools" in c for c in pi.commands())
