#!/usr/bin/env bash
# install.sh: set up the ITB pump training rig (training device, not for clinical use).
#
#   ./install.sh            install (idempotent: run it again at any time)
#   ./install.sh --test     install, then run every test
#   ./install.sh --run      install, then start the kiosk (on the simulated bench without a Pi)
#
# On a development machine: Debian packages Kivy needs, a .venv with the project and its test
# tools. On Raspberry Pi OS additionally: the Pi extras (lgpio everywhere; RPi.GPIO only on a
# Pi 4 or older and never beside rpi-lgpio, its Pi 5 shim) and the systemd units of the rig
# service and the kiosk (config /etc/itbrig/rig.toml, books /var/lib/itbrig).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")"
PROJECT_DIR=$(pwd)
VENV="$PROJECT_DIR/.venv"
ACTION=install
case "${1:-}" in
  "") ;;
  --test) ACTION=test ;;
  --run) ACTION=run ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) echo "install.sh: unknown option '$1' (allowed: --test, --run, --help)" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Kivy's wheels bundle SDL2 but need the multitouch library and Mesa's GL/EGL on the system.
APT_PACKAGES=(libmtdev1 libgl1 libegl1 libgles2 libegl-mesa0 libgl1-mesa-dri)

pi_model() {
  if [[ -r /proc/device-tree/model ]]; then
    tr -d '\0' </proc/device-tree/model | grep '^Raspberry Pi' || true
  fi
}

install_apt_packages() {
  command -v dpkg-query >/dev/null || { say "no dpkg: skipping Debian packages"; return; }
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then
    say "Debian packages present"
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

install_python_packages() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  say "installing the project and its test tools into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  local model
  model=$(pi_model)
  if [[ -n "$model" ]]; then
    say "Raspberry Pi detected ($model): installing the Pi extras"
    "$VENV/bin/python" -m pip install --quiet -e ".[pi]"
    if [[ "$model" == *"Raspberry Pi 5"* ]]; then
      say "Pi 5: RPi.GPIO does not work here; lgpio drives the pins"
    elif "$VENV/bin/python" -m pip show rpi-lgpio >/dev/null 2>&1; then
      say "rpi-lgpio is installed: not installing RPi.GPIO beside it"
    else
      "$VENV/bin/python" -m pip install --quiet -e ".[pi-rpigpio]"
    fi
  fi
}

install_pi_service() {
  # On a Raspberry Pi: the rig service and the kiosk as systemd units, config in /etc/itbrig,
  # books in /var/lib/itbrig. Re-running replaces the units and keeps config and books.
  [[ -n "$(pi_model)" ]] || return 0
  command -v systemctl >/dev/null || { say "no systemd: skipping the service set-up"; return; }
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  local user=${SUDO_USER:-$(id -un)}
  say "installing the systemd units (service user $user)"
  # Config and books are the service user's alone (0600 files, 0700 books directory).
  "${sudo[@]}" install -d -m 755 /etc/itbrig
  "${sudo[@]}" install -d -m 700 -o "$user" /var/lib/itbrig
  [[ -e /etc/itbrig/rig.toml ]] ||
    "${sudo[@]}" install -m 600 -o "$user" rig/rig.toml /etc/itbrig/rig.toml
  for unit in systemd/itbrig.service systemd/itbrig-kiosk.service; do
    sed -e "s|@VENV@|$VENV|g" -e "s|@PROJECT@|$PROJECT_DIR|g" -e "s|@USER@|$user|g" "$unit" \
      | "${sudo[@]}" tee "/etc/systemd/system/$(basename "$unit")" >/dev/null
  done
  "${sudo[@]}" systemctl daemon-reload
  "${sudo[@]}" systemctl enable --now itbrig.service
  "${sudo[@]}" systemctl enable itbrig-kiosk.service
}

install_apt_packages
install_python_packages
install_pi_service

case "$ACTION" in
  test)
    say "running the tests"
    exec "$VENV/bin/python" -m pytest
    ;;
  run)
    say "starting the rig"
    if [[ -n "$(pi_model)" ]]; then
      exec "$VENV/bin/itbrig" kiosk --url http://127.0.0.1:8470  # the itbrig.service on this Pi
    fi
    exec "$VENV/bin/itbrig" kiosk --sim
    ;;
esac
say "installed; start with: $VENV/bin/itbrig --help"
