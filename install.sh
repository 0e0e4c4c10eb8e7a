#!/usr/bin/env bash
# install.sh: set up the ITB pump training rig (training device, not for clinical use).
#
#   ./install.sh            install (idempotent: run it again at any time)
#   ./install.sh --test     install, then run every test
#   ./install.sh --run      install, then start the kiosk (on the simulated bench without a Pi)
#
# On a development machine: Debian packages Kivy needs (and, for --test, shellcheck and systemd's
# tools the tests use), a .venv with the project and its test tools. On Raspberry Pi OS also:
# the Pi extras (lgpio; RPi.GPIO only on a Pi 4 or older and never beside rpi-lgpio), I2C (and
# the serial port when rig.toml uses it) enabled with raspi-config, the service user in the
# gpio, i2c, dialout, video, render and input groups, udev rules naming the balance's adapter
# and the SCC1 cable, no console blanking, and the systemd units of the rig service and of the
# kiosk session on tty1 (config /etc/itbrig/rig.toml, books /var/lib/itbrig).
#
# For the tests of the Pi branch only (leave them unset on a real Pi):
#   ITBRIG_ROOT=DIR    prefix of every system path read or written (/etc, /var/lib, /boot,
#                      /proc/device-tree/model), to install into a temporary root
#   ITBRIG_SKIP_PIP=1  no venv creation and no pip (the .venv must exist already)
#   ITBRIG_USER=NAME   the service user (default: the user who ran sudo, else the current user)
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
PROJECT_DIR=$(pwd)
VENV="$PROJECT_DIR/.venv"
ROOT=${ITBRIG_ROOT:-}
ROOT=${ROOT%/}
ACTION=install
case "${1:-}" in
  "") ;;
  --test) ACTION="test" ;;
  --run) ACTION="run" ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "install.sh: unknown option '$1' (allowed: --test, --run, --help)" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Kivy's wheels bundle SDL2 but need the multitouch library and Mesa's GL/EGL on the system.
APT_PACKAGES=(libmtdev1 libgl1 libegl1 libgles2 libegl-mesa0 libgl1-mesa-dri)
# What the tests use beyond Python: shellcheck for install.sh, systemd-analyze for the units.
TEST_APT_PACKAGES=(shellcheck systemd)
# On a Pi: i2cdetect, to see the flow sensor on the bus.
PI_APT_PACKAGES=(i2c-tools)
# The service user's groups: header GPIO, I2C bus and serial ports for the rig service; the
# display, the GPU render node and the touchscreen for the kiosk.
SERVICE_GROUPS=(gpio i2c dialout video render input)
UNITS=(itbrig.service itbrig-kiosk.service)
CONFIG="$ROOT/etc/itbrig/rig.toml"
REBOOT_NEEDED=0

SUDO=()
((EUID == 0)) || SUDO=(sudo)
as_root() { "${SUDO[@]}" "$@"; }

pi_model() {
  if [[ -r "$ROOT/proc/device-tree/model" ]]; then
    tr -d '\0' <"$ROOT/proc/device-tree/model" | grep '^Raspberry Pi' || true
  fi
}
PI_MODEL=$(pi_model)

install_apt_packages() {
  command -v dpkg-query >/dev/null || { say "no dpkg: skipping Debian packages"; return; }
  local wanted=("${APT_PACKAGES[@]}") missing=() package
  [[ "$ACTION" != test ]] || wanted+=("${TEST_APT_PACKAGES[@]}")
  [[ -z "$PI_MODEL" ]] || wanted+=("${PI_APT_PACKAGES[@]}")
  for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    say "Debian packages present"
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

install_python_packages() {
  if [[ "${ITBRIG_SKIP_PIP:-}" == 1 ]]; then
    [[ -x "$VENV/bin/itbrig" ]] || { echo "install.sh: ITBRIG_SKIP_PIP=1 needs $VENV" >&2; exit 1; }
    say "ITBRIG_SKIP_PIP=1: using $VENV as it is (no pip)"
    return
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  say "installing the project and its test tools into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  if [[ -n "$PI_MODEL" ]]; then
    say "Raspberry Pi detected ($PI_MODEL): installing the Pi extras"
    "$VENV/bin/python" -m pip install --quiet -e ".[pi]"
    if [[ "$PI_MODEL" == *"Raspberry Pi 5"* ]]; then
      say "Pi 5: RPi.GPIO does not work here; lgpio drives the pins"
    elif "$VENV/bin/python" -m pip show rpi-lgpio >/dev/null 2>&1; then
      say "rpi-lgpio is installed: not installing RPi.GPIO beside it"
    else
      "$VENV/bin/python" -m pip install --quiet -e ".[pi-rpigpio]"
    fi
  fi
}

# -- the Raspberry Pi: buses, devices, session, units ------------------------------------------

# Install file $1 as $2 with mode $3 unless it is already there unchanged; true if it changed.
put_file() {
  local source=$1 target=$2 mode=$3
  if [[ -f "$target" ]] && cmp -s "$source" "$target" \
    && [[ "$(stat -c %a "$target")" == "$mode" ]]; then
    return 1
  fi
  as_root install -D -m "$mode" "$source" "$target"
  say "wrote ${target#"$ROOT"}"
}

# Make directory $1 with mode $2 (and owner $3) unless it is already so.
put_dir() {
  local dir=$1 mode=$2 owner=${3:-}
  if [[ -d "$dir" && "$(stat -c %a "$dir")" == "$mode" ]] \
    && [[ -z "$owner" || "$(stat -c %U "$dir")" == "$owner" ]]; then
    return 0
  fi
  as_root install -d -m "$mode" ${owner:+-o "$owner"} "$dir"
}

add_to_groups() {
  local user=$1 group entry members
  for group in "${SERVICE_GROUPS[@]}"; do
    if ! entry=$(getent group "$group"); then
      say "no group '$group' on this system: skipped (is this Raspberry Pi OS?)"
      continue
    fi
    members=$(cut -d: -f4 <<<"$entry")
    if [[ ",$members," != *",$user,"* ]]; then
      as_root usermod -aG "$group" "$user"
      say "added $user to group $group"
    fi
  done
}

# raspi-config's non-interactive interface, as Raspberry Pi OS itself enables buses: get_* print
# 0 when a setting is on, do_* take 0 to switch it on and 1 to switch it off.
raspi_config() { as_root raspi-config nonint "$@"; }

enable_buses() {
  local buses
  buses=$("$VENV/bin/itbrig" config buses "$CONFIG")
  if ! command -v raspi-config >/dev/null; then
    say "no raspi-config: enable I2C (dtparam=i2c_arm=on) and any serial port yourself"
    return
  fi
  if [[ "$(raspi_config get_i2c)" != 0 ]]; then
    raspi_config do_i2c 0
    say "enabled I2C (/dev/i2c-1)"
    REBOOT_NEEDED=1
  fi
  if grep -qx uart <<<"$buses"; then
    if [[ "$(raspi_config get_serial_hw)" != 0 ]]; then
      raspi_config do_serial_hw 0
      say "enabled the serial port on GPIO 14/15 (/dev/serial0)"
      REBOOT_NEEDED=1
    fi
    if [[ "$(raspi_config get_serial_cons)" == 0 ]]; then
      raspi_config do_serial_cons 1
      say "took the login console off the serial port (rig.toml uses it)"
      REBOOT_NEEDED=1
    fi
  fi
}

install_udev_rules() {
  local rules
  rules=$(mktemp)
  "$VENV/bin/itbrig" config udev-rules "$CONFIG" >"$rules"
  if put_file "$rules" "$ROOT/etc/udev/rules.d/60-itbrig.rules" 644; then
    as_root udevadm control --reload-rules
    as_root udevadm trigger --subsystem-match=tty --action=add
  fi
  rm -f "$rules"
}

# The kiosk never blanks: no desktop, no compositor, nothing to turn the display off; and the
# kernel's text console (shown before the kiosk starts and while it restarts) does not blank.
no_console_blanking() {
  local cmdline="$ROOT/boot/firmware/cmdline.txt"
  [[ -f "$cmdline" ]] || cmdline="$ROOT/boot/cmdline.txt"
  [[ -f "$cmdline" ]] || { say "no cmdline.txt: console blanking left as it is"; return; }
  grep -qE '(^| )consoleblank=0( |$)' "$cmdline" && return
  if grep -qE '(^| )consoleblank=' "$cmdline"; then
    as_root sed -i -E '1 s/(^| )consoleblank=[^ ]*/\1consoleblank=0/' "$cmdline"
  else
    as_root sed -i '1 s/[[:space:]]*$/ consoleblank=0/' "$cmdline"
  fi
  say "console blanking off (consoleblank=0 in ${cmdline#"$ROOT"})"
  REBOOT_NEEDED=1
}

install_units() {
  local user=$1 uid=$2 unit rendered changed=0
  rendered=$(mktemp)
  for unit in "${UNITS[@]}"; do
    sed -e "s|@VENV@|$VENV|g" -e "s|@PROJECT@|$PROJECT_DIR|g" -e "s|@USER@|$user|g" \
      -e "s|@UID@|$uid|g" "systemd/$unit" >"$rendered"
    if put_file "$rendered" "$ROOT/etc/systemd/system/$unit" 644; then
      changed=1
    fi
  done
  rm -f "$rendered"
  if put_file systemd/itbrig-kiosk.pam "$ROOT/etc/pam.d/itbrig-kiosk" 644; then
    changed=1
  fi
  ((changed == 0)) || as_root systemctl daemon-reload
  # A desktop would take the screen from the kiosk: boot to the console (as raspi-config does).
  if [[ "$(systemctl get-default)" == graphical.target ]]; then
    as_root systemctl set-default multi-user.target
    say "boots without the desktop from now on (default target multi-user.target)"
    REBOOT_NEEDED=1
  fi
  for unit in "${UNITS[@]}"; do
    systemctl is-enabled --quiet "$unit" || as_root systemctl enable "$unit"
  done
  systemctl is-active --quiet itbrig.service || as_root systemctl start itbrig.service
  if ((changed)); then
    say "units updated; a running rig service keeps its old unit until restarted:"
    say "  sudo systemctl restart itbrig.service itbrig-kiosk.service  (stops delivery)"
  fi
}

install_pi_system() {
  [[ -n "$PI_MODEL" ]] || return 0
  command -v systemctl >/dev/null || { say "no systemd: skipping the Pi set-up"; return; }
  local user=${ITBRIG_USER:-${SUDO_USER:-$(id -un)}} uid
  uid=$(id -u "$user")
  say "setting up the Pi for the rig (service user $user)"
  add_to_groups "$user"
  put_dir "$ROOT/etc/itbrig" 755
  # Config and books are the service user's alone (0600 file, 0700 books directory).
  put_dir "$ROOT/var/lib/itbrig" 700 "$user"
  if [[ ! -e "$CONFIG" ]]; then
    as_root install -m 600 -o "$user" rig/rig.toml "$CONFIG"
    say "wrote /etc/itbrig/rig.toml (the shipped defaults; edit it for this bench)"
  fi
  "$VENV/bin/itbrig" config check "$CONFIG" >/dev/null \
    || { echo "install.sh: fix /etc/itbrig/rig.toml (itbrig config check names the key)" >&2; exit 2; }
  enable_buses
  install_udev_rules
  no_console_blanking
  install_units "$user" "$uid"
  if ((REBOOT_NEEDED)); then
    say "reboot to apply the bus, console and boot settings (sudo reboot)"
  fi
}

install_apt_packages
install_python_packages
install_pi_system

case "$ACTION" in
  test)
    say "running the tests"
    exec "$VENV/bin/python" -m pytest
    ;;
  run)
    say "starting the rig"
    if [[ -n "$PI_MODEL" ]]; then
      exec "$VENV/bin/itbrig" kiosk --url http://127.0.0.1:8470  # the itbrig.service on this Pi
    fi
    exec "$VENV/bin/itbrig" kiosk --sim
    ;;
esac
say "installed; start with: $VENV/bin/itbrig --help"
