"""The books' PIN hashes."""

from __future__ import annotations

from rig.service.books.schema import Books, EventKind


class PinBooks(Books):
    """Salted PIN hashes per role (never the PINs themselves)."""

    # -------------------------------------------------------------------------------- PINs

    def load_pin_hash(self, role: str) -> tuple[str, bytes, bytes] | None:
        """(scheme, salt, digest) of *role*'s PIN, or None if none is stored."""
        with self._read("read the PIN hash") as db:
            row = db.execute(
                "SELECT scheme, salt, digest FROM pins WHERE role = ?", (role,)
            ).fetchone()
            return None if row is None else (row[0], bytes(row[1]), bytes(row[2]))

    def save_pin_hash(self, role: str, scheme: str, salt: bytes, digest: bytes) -> None:
        """Store (replace) *role*'s salted PIN hash. The PIN itself is never stored."""
        row = {
            "role": role,
            "scheme": scheme,
            "salt": salt,
            "digest": digest,
            "updated_at_utc": self._now(),
        }
        with self._write("store the PIN hash") as db:
            db["pins"].upsert(row, pk="role")
            self._log(db, EventKind.PIN, f"PIN for {role} set")
