"""Roles, PINs and sessions of the rig's API.

Three roles, each allowed everything the one below it may do:

- ``trainee``: view the pump, request a patient bolus;
- ``clinician`` (the trainer): programming, start/stop, clinician boluses, refill, alarms,
  fault injection;
- ``engineer``: calibration, configuration and PIN management (any role's PIN).

PINs are 4–8 ASCII digits, kept only as scrypt hashes with a random salt per PIN and compared in
constant time. A fresh install gets :data:`DEFAULT_PINS` (trainee 1111, clinician 2222,
engineer 3333; configurable), to be changed with :meth:`Authenticator.set_pin` (over the API:
each role its own PIN with its current one, the engineer any role's);
:meth:`Authenticator.factory_pin_roles` says which roles still have theirs. A 4-digit PIN
has only 10 000 values, so the hash guards against casual reading of the database, not against a
determined offline search: the lockout is what protects the live API.

Five wrong PINs lock a role for 60 s; the lockout holds for its whole duration even against the
right PIN, and a successful login resets the count. Lockouts and sessions live in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol


class Role(StrEnum):
    """Who is using the rig, lowest privilege first."""

    TRAINEE = "trainee"
    CLINICIAN = "clinician"
    ENGINEER = "engineer"


class Action(StrEnum):
    """Named things a caller may ask the rig to do."""

    VIEW = "view"
    PATIENT_BOLUS = "patient_bolus"
    PROGRAM = "program"
    START_STOP = "start_stop"
    CLINICIAN_BOLUS = "clinician_bolus"
    ALARM_ACKNOWLEDGE = "alarm_acknowledge"
    ALARM_SILENCE = "alarm_silence"
    REFILL = "refill"
    FAULT_INJECTION = "fault_injection"
    CALIBRATION = "calibration"
    CONFIGURATION = "configuration"
    MANAGE_PINS = "manage_pins"


# What each role adds to the role below it (in Role order).
_ADDED_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.TRAINEE: frozenset({Action.VIEW, Action.PATIENT_BOLUS}),
    Role.CLINICIAN: frozenset(
        {
            Action.PROGRAM,
            Action.START_STOP,
            Action.CLINICIAN_BOLUS,
            Action.ALARM_ACKNOWLEDGE,
            Action.ALARM_SILENCE,
            Action.REFILL,
            Action.FAULT_INJECTION,
        }
    ),
    Role.ENGINEER: frozenset({Action.CALIBRATION, Action.CONFIGURATION, Action.MANAGE_PINS}),
}


def _cumulative_permissions() -> dict[Role, frozenset[Action]]:
    permissions: dict[Role, frozenset[Action]] = {}
    granted: frozenset[Action] = frozenset()
    for role in Role:
        granted |= _ADDED_ACTIONS[role]
        permissions[role] = granted
    return permissions


PERMISSIONS: Mapping[Role, frozenset[Action]] = _cumulative_permissions()

DEFAULT_PINS: Mapping[Role, str] = {
    Role.TRAINEE: "1111",
    Role.CLINICIAN: "2222",
    Role.ENGINEER: "3333",
}
MAX_WRONG_PINS = 5
LOCKOUT_S = 60.0
SESSION_IDLE_S = 15 * 60.0

_PIN_PATTERN = re.compile(r"[0-9]{4,8}")  # ASCII only: \d would accept other scripts' digits
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCHEME = f"scrypt:n={_SCRYPT_N},r={_SCRYPT_R},p={_SCRYPT_P}"
_SALT_BYTES = 16
_DIGEST_BYTES = 32


class AuthError(Exception):
    """Login or permission refused."""


class PinFormatError(AuthError, ValueError):
    """The text given is not a PIN at all (not 4–8 digits)."""


class BadPin(AuthError):
    """Wrong PIN; ``attempts_left`` before the role is locked."""

    def __init__(self, role: Role, attempts_left: int) -> None:
        super().__init__(
            f"wrong PIN for {role.value}: {attempts_left} attempt(s) left before a lockout"
        )
        self.role = role
        self.attempts_left = attempts_left


class RoleLocked(AuthError):
    """Too many wrong PINs: the role is locked for ``seconds_remaining``."""

    def __init__(self, role: Role, seconds_remaining: float) -> None:
        super().__init__(
            f"{role.value} is locked after {MAX_WRONG_PINS} wrong PINs: try again in"
            f" {seconds_remaining:.0f} s"
        )
        self.role = role
        self.seconds_remaining = seconds_remaining


class NotPermitted(AuthError):
    """The role may not perform the action."""

    def __init__(self, role: Role, action: Action) -> None:
        super().__init__(f"{role.value} may not {action.value.replace('_', ' ')}")
        self.role = role
        self.action = action


class UnknownSession(AuthError):
    """The token is unknown, logged out or expired: log in again."""


def permits(role: Role | str, action: Action | str) -> bool:
    """Whether *role* may perform *action*."""
    return Action(action) in PERMISSIONS[Role(role)]


def check_permitted(role: Role | str, action: Action | str) -> None:
    """Raise :class:`NotPermitted` unless *role* may perform *action*."""
    if not permits(role, action):
        raise NotPermitted(Role(role), Action(action))


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        roles = ", ".join(member.value for member in Role)
        raise AuthError(f"unknown role {role!r}: roles are {roles}") from None


def validate_pin(pin: object) -> str:
    """Return *pin* if it is 4–8 ASCII digits, else raise :class:`PinFormatError`."""
    if not isinstance(pin, str) or _PIN_PATTERN.fullmatch(pin) is None:
        raise PinFormatError("a PIN is 4 to 8 digits (0-9), nothing else")
    return pin


class PinHash(NamedTuple):
    """A salted PIN hash as stored: ``scheme`` names the algorithm and its cost parameters."""

    scheme: str
    salt: bytes
    digest: bytes


def _scrypt(pin: str, salt: bytes, scheme: str) -> bytes:
    name, _, params_text = scheme.partition(":")
    params = dict(item.split("=") for item in params_text.split(",")) if params_text else {}
    if name != "scrypt" or set(params) != {"n", "r", "p"}:
        raise AuthError(f"unsupported PIN hash scheme {scheme!r}")
    return hashlib.scrypt(
        pin.encode("ascii"),
        salt=salt,
        n=int(params["n"]),
        r=int(params["r"]),
        p=int(params["p"]),
        dklen=_DIGEST_BYTES,
    )


def hash_pin(pin: str) -> PinHash:
    """Hash a (valid) PIN with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    return PinHash(_SCHEME, salt, _scrypt(validate_pin(pin), salt, _SCHEME))


def verify_pin(pin: str, stored: PinHash) -> bool:
    """Constant-time check of *pin* against a stored hash."""
    return hmac.compare_digest(_scrypt(pin, stored.salt, stored.scheme), stored.digest)


class PinStore(Protocol):
    """Where PIN hashes persist (``rig.service.books.RigStore`` is one)."""

    def load_pin_hash(self, role: str) -> tuple[str, bytes, bytes] | None: ...

    def save_pin_hash(self, role: str, scheme: str, salt: bytes, digest: bytes) -> None: ...


@dataclass
class _Lockout:
    wrong_pins: int = 0
    locked_until_s: float = float("-inf")


@dataclass
class _Session:
    role: Role
    last_used_s: float


class Authenticator:
    """PIN login per role, lockout after repeated wrong PINs, and idle-expiring sessions.

    *clock* returns seconds (monotonic by default); tests pass a fake one.
    """

    def __init__(
        self,
        pin_store: PinStore,
        *,
        default_pins: Mapping[Role, str] = DEFAULT_PINS,
        max_wrong_pins: int = MAX_WRONG_PINS,
        lockout_s: float = LOCKOUT_S,
        session_idle_s: float = SESSION_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = [role.value for role in Role if role not in default_pins]
        if missing:
            raise ValueError(f"default PINs missing for: {', '.join(missing)}")
        self._pin_store = pin_store
        self._default_pins = dict(default_pins)
        self._factory_checked: dict[Role, tuple[tuple[str, bytes, bytes] | None, bool]] = {}
        self._max_wrong_pins = max_wrong_pins
        self._lockout_s = lockout_s
        self._session_idle_s = session_idle_s
        self._clock = clock
        # One lock per role serialises PIN checks (so parallel guesses cannot outrun the
        # lockout) without making session look-ups wait for a slow hash.
        self._role_locks = {role: threading.Lock() for role in Role}
        self._lockouts = {role: _Lockout() for role in Role}
        self._sessions: dict[str, _Session] = {}
        self._sessions_lock = threading.Lock()
        for role in Role:
            if pin_store.load_pin_hash(role.value) is None:
                self.set_pin(role, default_pins[role])

    def set_pin(self, role: Role | str, pin: str) -> None:
        """Replace *role*'s PIN (stored only as a salted hash)."""
        stored = hash_pin(pin)
        self._pin_store.save_pin_hash(_role(role).value, *stored)

    def seconds_locked(self, role: Role | str) -> float:
        """Seconds until *role* may try a PIN again (0 when not locked)."""
        return max(0.0, self._lockouts[_role(role)].locked_until_s - self._clock())

    def factory_pin_roles(self) -> list[str]:
        """Roles whose PIN is still their factory default (a hash check once per stored PIN)."""
        roles = []
        for role in Role:
            stored = self._pin_store.load_pin_hash(role.value)
            checked = self._factory_checked.get(role)
            if checked is None or checked[0] != stored:
                is_factory = stored is not None and verify_pin(
                    self._default_pins[role], PinHash(*stored)
                )
                checked = self._factory_checked[role] = (stored, is_factory)
            if checked[1]:
                roles.append(role.value)
        return roles

    def login(self, role: Role | str, pin: str) -> str:
        """Check *pin* for *role* and return a new session token.

        Raises :class:`RoleLocked` while locked (whatever the PIN), :class:`PinFormatError` for
        text that is not a PIN (not counted as an attempt), :class:`BadPin` for a wrong PIN, and
        :class:`RoleLocked` on the wrong PIN that reaches the limit.
        """
        role = _role(role)
        self.check_pin(role, pin)
        token = secrets.token_urlsafe(32)
        with self._sessions_lock:
            now_s = self._clock()
            for stale in [t for t, s in self._sessions.items() if self._expired(s, now_s)]:
                del self._sessions[stale]
            self._sessions[token] = _Session(role, now_s)
        return token

    def check_pin(self, role: Role | str, pin: str) -> None:
        """Check *pin* for *role*, counting a wrong one towards the lockout (as :meth:`login`
        does, without starting a session)."""
        role = _role(role)
        with self._role_locks[role]:
            lockout = self._lockouts[role]
            remaining_s = self.seconds_locked(role)
            if remaining_s > 0:
                raise RoleLocked(role, remaining_s)
            validate_pin(pin)
            stored = self._pin_store.load_pin_hash(role.value)
            if stored is None or not verify_pin(pin, PinHash(*stored)):
                lockout.wrong_pins += 1
                if lockout.wrong_pins >= self._max_wrong_pins:
                    lockout.wrong_pins = 0
                    lockout.locked_until_s = self._clock() + self._lockout_s
                    raise RoleLocked(role, self._lockout_s)
                raise BadPin(role, self._max_wrong_pins - lockout.wrong_pins)
            lockout.wrong_pins = 0

    def _expired(self, session: _Session, now_s: float) -> bool:
        return now_s - session.last_used_s > self._session_idle_s

    def role_for(self, token: str) -> Role:
        """The role of a live session (each use restarts its idle timer)."""
        with self._sessions_lock:
            session = self._sessions.get(token)
            now_s = self._clock()
            if session is None or self._expired(session, now_s):
                self._sessions.pop(token, None)
                raise UnknownSession("unknown or expired session: log in again")
            session.last_used_s = now_s
            return session.role

    def require(self, token: str, action: Action | str) -> Role:
        """The session's role, if it may perform *action*; else :class:`UnknownSession` or
        :class:`NotPermitted`."""
        role = self.role_for(token)
        check_permitted(role, action)
        return role

    def logout(self, token: str) -> None:
        """End a session (nothing happens if it is already gone)."""
        with self._sessions_lock:
            self._sessions.pop(token, None)
