"""Roles, PIN hashing, lockout and sessions, with PIN hashes kept in a real RigStore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.service.auth import (
    DEFAULT_PINS,
    PERMISSIONS,
    Action,
    Authenticator,
    AuthError,
    BadPin,
    NotPermitted,
    PinFormatError,
    PinHash,
    Role,
    RoleLocked,
    UnknownSession,
    check_permitted,
    hash_pin,
    permits,
    validate_pin,
    verify_pin,
)
from rig.service.books import RigStore
from tests.manual_clock import ManualClock

IDLE_S = 600.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "rig.sqlite"


@pytest.fixture
def store(db_path: Path) -> Iterator[RigStore]:
    with RigStore.open(db_path) as opened:
        yield opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def auth(store: RigStore, clock: ManualClock) -> Authenticator:
    return Authenticator(store, clock=clock, session_idle_s=IDLE_S)


# ---------------------------------------------------------------------------- hashing


@pytest.mark.parametrize("pin", ["1111", "0000", "2468", "73914628"])
def test_hash_never_equals_or_contains_the_pin(pin):
    stored = hash_pin(pin)
    encoded = pin.encode()
    for part in (stored.salt, stored.digest):
        assert part != encoded
        assert encoded not in part
    assert pin not in stored.digest.hex()
    assert pin not in stored.scheme
    assert verify_pin(pin, stored)


def test_salts_differ_for_the_same_pin():
    first, second = hash_pin("2222"), hash_pin("2222")
    assert first.salt != second.salt
    assert first.digest != second.digest
    assert verify_pin("2222", first)
    assert verify_pin("2222", second)


@pytest.mark.parametrize("wrong", ["2223", "22222", "0000", "22220000"])
def test_wrong_pin_does_not_verify(wrong):
    assert not verify_pin(wrong, hash_pin("2222"))


def test_pin_never_reaches_the_database_file(auth, store, db_path):
    pin = "73914628"
    auth.set_pin(Role.ENGINEER, pin)
    scheme, salt, digest = store.load_pin_hash("engineer")
    assert verify_pin(pin, PinHash(scheme, salt, digest))
    files = [db_path, db_path.with_name(db_path.name + "-wal")]
    assert all(pin.encode() not in path.read_bytes() for path in files if path.exists())


def test_unknown_hash_scheme_is_refused():
    stored = hash_pin("1234")
    with pytest.raises(AuthError, match="unsupported"):
        verify_pin("1234", stored._replace(scheme="md5"))


@pytest.mark.parametrize(
    ("pin", "valid"),
    [
        ("1234", True),
        ("12345678", True),
        ("0000", True),
        ("123", False),
        ("123456789", False),
        ("12a4", False),
        (" 1234", False),
        ("1234\n", False),
        ("١٢٣٤", False),  # Arabic-Indic digits
        ("１２３４", False),  # full-width digits
        ("", False),
        (1234, False),
        (None, False),
    ],
)
def test_pin_format(pin, valid):
    if valid:
        assert validate_pin(pin) == pin
    else:
        with pytest.raises(PinFormatError, match="4 to 8 digits"):
            validate_pin(pin)


# ------------------------------------------------------------------ defaults, persistence


def test_fresh_install_gets_the_default_pins(auth):
    for role, pin in DEFAULT_PINS.items():
        auth.role_for(auth.login(role, pin))
    assert DEFAULT_PINS == {Role.TRAINEE: "1111", Role.CLINICIAN: "2222", Role.ENGINEER: "3333"}


def test_changed_pin_survives_a_restart_and_defaults_do_not_return(db_path, clock):
    with RigStore.open(db_path) as store:
        Authenticator(store, clock=clock).set_pin("clinician", "4321")
    with RigStore.open(db_path) as store:
        auth = Authenticator(store, clock=clock)
        assert auth.role_for(auth.login("clinician", "4321")) is Role.CLINICIAN
        with pytest.raises(BadPin):
            auth.login("clinician", "2222")


def test_configured_default_pins(store, clock):
    pins = {Role.TRAINEE: "5555", Role.CLINICIAN: "666666", Role.ENGINEER: "77777777"}
    auth = Authenticator(store, default_pins=pins, clock=clock)
    for role, pin in pins.items():
        auth.login(role, pin)
    with pytest.raises(ValueError, match="engineer"):
        Authenticator(store, default_pins={Role.TRAINEE: "5555", Role.CLINICIAN: "6666"})


def test_set_pin_rejects_bad_format_and_keeps_the_old_pin(auth):
    with pytest.raises(PinFormatError):
        auth.set_pin(Role.TRAINEE, "12")
    auth.login(Role.TRAINEE, "1111")


def test_unknown_role_is_refused(auth):
    with pytest.raises(AuthError, match="unknown role 'patient'"):
        auth.login("patient", "1111")


# ---------------------------------------------------------------------------- lockout


def test_five_wrong_pins_lock_the_role_for_60_s(auth, clock):
    for attempts_left in (4, 3, 2, 1):
        with pytest.raises(BadPin) as caught:
            auth.login(Role.CLINICIAN, "9999")
        assert caught.value.attempts_left == attempts_left
    with pytest.raises(RoleLocked) as caught:
        auth.login(Role.CLINICIAN, "9999")
    assert caught.value.seconds_remaining == 60.0
    # The right PIN does not lift the lockout while it lasts.
    clock.advance(30)
    with pytest.raises(RoleLocked) as caught:
        auth.login(Role.CLINICIAN, "2222")
    assert caught.value.seconds_remaining == pytest.approx(30.0)
    assert "30 s" in str(caught.value)
    # Other roles are not locked.
    auth.login(Role.TRAINEE, "1111")
    clock.advance(29.9)
    with pytest.raises(RoleLocked):
        auth.login(Role.CLINICIAN, "2222")
    clock.advance(0.1)
    assert auth.seconds_locked(Role.CLINICIAN) == 0.0
    assert auth.role_for(auth.login(Role.CLINICIAN, "2222")) is Role.CLINICIAN


def test_lockout_ends_with_a_fresh_count(auth, clock):
    for _ in range(5):
        with pytest.raises((BadPin, RoleLocked)):
            auth.login(Role.ENGINEER, "0000")
    clock.advance(60)
    with pytest.raises(BadPin) as caught:
        auth.login(Role.ENGINEER, "0000")
    assert caught.value.attempts_left == 4


def test_success_resets_the_wrong_pin_count(auth):
    for _ in range(4):
        with pytest.raises(BadPin):
            auth.login(Role.TRAINEE, "0000")
    auth.login(Role.TRAINEE, "1111")
    for attempts_left in (4, 3, 2, 1):
        with pytest.raises(BadPin) as caught:
            auth.login(Role.TRAINEE, "0000")
        assert caught.value.attempts_left == attempts_left


def test_malformed_pin_is_not_counted_as_a_guess(auth):
    for _ in range(10):
        with pytest.raises(PinFormatError):
            auth.login(Role.TRAINEE, "abc")
    with pytest.raises(BadPin) as caught:
        auth.login(Role.TRAINEE, "0000")
    assert caught.value.attempts_left == 4


# ------------------------------------------------------------------------ permissions

MATRIX = {
    Action.VIEW: (True, True, True),
    Action.PATIENT_BOLUS: (True, True, True),
    Action.PROGRAM: (False, True, True),
    Action.START_STOP: (False, True, True),
    Action.CLINICIAN_BOLUS: (False, True, True),
    Action.ALARM_ACKNOWLEDGE: (False, True, True),
    Action.ALARM_SILENCE: (False, True, True),
    Action.REFILL: (False, True, True),
    Action.FAULT_INJECTION: (False, True, True),
    Action.CALIBRATION: (False, False, True),
    Action.CONFIGURATION: (False, False, True),
    Action.MANAGE_PINS: (False, False, True),
}


def test_matrix_covers_every_action():
    assert set(MATRIX) == set(Action)


@pytest.mark.parametrize("action", list(MATRIX))
@pytest.mark.parametrize("role_index", range(3))
def test_permissions_matrix(action, role_index):
    role = (Role.TRAINEE, Role.CLINICIAN, Role.ENGINEER)[role_index]
    allowed = MATRIX[action][role_index]
    assert permits(role, action) is allowed
    assert permits(role.value, action.value) is allowed
    if allowed:
        check_permitted(role, action)
    else:
        with pytest.raises(NotPermitted, match=role.value):
            check_permitted(role, action)


def test_each_role_includes_the_one_below():
    assert PERMISSIONS[Role.TRAINEE] < PERMISSIONS[Role.CLINICIAN] < PERMISSIONS[Role.ENGINEER]


def test_require_checks_session_and_permission(auth):
    trainee = auth.login(Role.TRAINEE, "1111")
    assert auth.require(trainee, Action.PATIENT_BOLUS) is Role.TRAINEE
    with pytest.raises(NotPermitted) as caught:
        auth.require(trainee, Action.PROGRAM)
    assert (caught.value.role, caught.value.action) == (Role.TRAINEE, Action.PROGRAM)
    with pytest.raises(UnknownSession):
        auth.require("not-a-token", Action.VIEW)


# --------------------------------------------------------------------------- sessions


def test_tokens_are_random_and_separate(auth):
    tokens = {auth.login(Role.TRAINEE, "1111") for _ in range(3)}
    assert len(tokens) == 3
    assert all(len(token) >= 40 for token in tokens)
    assert all("1111" not in token for token in tokens)


def test_session_expires_after_idle_time(auth, clock):
    token = auth.login(Role.CLINICIAN, "2222")
    clock.advance(IDLE_S - 1)
    assert auth.role_for(token) is Role.CLINICIAN  # use restarts the idle timer
    clock.advance(IDLE_S - 1)
    assert auth.role_for(token) is Role.CLINICIAN
    clock.advance(IDLE_S + 1)
    with pytest.raises(UnknownSession, match="log in again"):
        auth.role_for(token)
    clock.advance(-IDLE_S)  # even if time were to look fine again, the session is gone
    with pytest.raises(UnknownSession):
        auth.role_for(token)


def test_logout_ends_only_that_session(auth):
    first = auth.login(Role.ENGINEER, "3333")
    second = auth.login(Role.ENGINEER, "3333")
    auth.logout(first)
    auth.logout(first)  # a second logout is harmless
    with pytest.raises(UnknownSession):
        auth.role_for(first)
    assert auth.role_for(second) is Role.ENGINEER
