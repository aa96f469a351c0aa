"""Enrolled agent keys: which `kid` may sign for which factory, and since/until when.

Keys live in the bureau database (table `keys`, see bureau.store). Lookups are always
scoped to the factory named by the topic, parameterised, and never touch the filesystem,
so a hostile `kid` (`../`, quotes, SQL) is just an unknown key. A revoked key rejects
reports received after `revoked_at`; earlier ones stay valid.

Rotation: a statement signed by the old and the new key names `effective_from_seq`, the
first sequence number the new key signs. Applying it enrols the new key and retires the old
one at once, which gives each key a window by sequence number: the old key signs seqs below
`effective_from_seq` (its reports still in flight stay valid), the new key that seq and
after. A retired or revoked key can sign no further rotation, so a stolen retired key
cannot hand the factory to a key of its choosing. Retired keys are kept forever to verify
history.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    b64url_json,
    is_thumbprint,
    public_okp,
    strict_loads,
    thumbprint,
    verify_general,
)
from bureau.database import Database
from bureau.errors import BureauError


class RegistryError(BureauError):
    """An enrollment, revocation or rotation that cannot be done; str() says why."""


@dataclass(frozen=True, slots=True)
class EnrolledKey:
    kid: str
    factory_id: str
    jwk: dict[str, str]
    status: str
    valid_from: float
    revoked_at: float | None
    retired_at: float | None
    from_seq: int | None = None  # first seq this key signs (set when rotated in)
    until_seq: int | None = None  # first seq it no longer signs (set when rotated out)

    def signs_seq(self, seq: int) -> bool:
        """Whether `seq` lies in the key's window by sequence number."""
        return (self.from_seq is None or seq >= self.from_seq) and (
            self.until_seq is None or seq < self.until_seq
        )


class KeyLookupError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeyRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enroll(self, factory_id: str, jwk: dict[str, Any], at: float | None = None) -> EnrolledKey:
        """Register a public Ed25519 JWK for a factory (the offline fallback of §b.6)."""
        try:
            public_okp(jwk)
        except EnvelopeError as error:
            raise RegistryError(f"Cannot enroll this key: {error}") from None
        clean = {"kty": "OKP", "crv": "Ed25519", "x": str(jwk["x"])}
        kid = thumbprint(clean)
        existing = self.get(kid)
        if existing is not None:
            if existing.factory_id != factory_id:
                raise RegistryError(f"Key {kid} is already enrolled for another factory.")
            return existing
        self.db.execute(
            "INSERT INTO keys (kid, factory_id, jwk, status, valid_from) "
            "VALUES (:kid, :factory_id, :jwk, 'active', :valid_from)",
            {
                "kid": kid,
                "factory_id": factory_id,
                "jwk": json.dumps(clean, sort_keys=True),
                "valid_from": at if at is not None else time.time(),
            },
        )
        key = self.get(kid)
        assert key is not None
        return key

    def revoke(self, kid: str, at: float | None = None) -> EnrolledKey:
        key = self.get(kid)
        if key is None:
            raise RegistryError(f"No enrolled key has kid {kid!r}.")
        self.db.execute(
            "UPDATE keys SET status = 'revoked', revoked_at = :at WHERE kid = :kid",
            {"at": at if at is not None else time.time(), "kid": kid},
        )
        revoked = self.get(kid)
        assert revoked is not None
        return revoked

    def get(self, kid: str) -> EnrolledKey | None:
        if not is_thumbprint(kid):  # typed by an admin or sent by anyone: never a kid
            return None
        # One query: the key with its window by sequence number from the rotations.
        rows = self.db.tuples(
            "SELECT kid, factory_id, jwk, status, valid_from, revoked_at, retired_at, "
            "(SELECT effective_from_seq FROM rotations WHERE new_kid = keys.kid), "
            "(SELECT effective_from_seq FROM rotations WHERE rotated_from = keys.kid LIMIT 1) "
            "FROM keys WHERE kid = :kid",
            {"kid": kid},
        )
        if not rows:
            return None
        row = rows[0]
        return EnrolledKey(
            row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6],
            from_seq=row[7], until_seq=row[8],
        )

    def enrolled(self, factory_id: str | None = None) -> list[EnrolledKey]:
        sql = "SELECT kid FROM keys"
        args: dict[str, str] = {}
        if factory_id is not None:
            sql += " WHERE factory_id = :factory_id"
            args = {"factory_id": factory_id}
        kids = [row[0] for row in self.db.rows(sql + " ORDER BY factory_id, valid_from", args)]
        return [k for k in (self.get(kid) for kid in kids) if k is not None]

    def known_factory(self, factory_id: str) -> bool:
        row = self.db.row("SELECT 1 FROM keys WHERE factory_id = :factory_id LIMIT 1",
                          {"factory_id": factory_id})
        return row is not None

    def lookup(self, factory_id: str, kid: str, at: float) -> EnrolledKey:
        """The key that may verify a message for `factory_id` received at `at`, or raise
        KeyLookupError with reason unknown-factory / unknown-key / revoked."""
        key = self.get(kid)  # the usual case in one query; the factory only when it fails
        if key is None or key.factory_id != factory_id:
            if not self.known_factory(factory_id):
                raise KeyLookupError("unknown-factory", "Factory is not enrolled.")
            raise KeyLookupError("unknown-key", "Key is not enrolled for this factory.")
        if key.revoked_at is not None and at >= key.revoked_at:
            raise KeyLookupError("revoked", "Key was revoked before this message arrived.")
        if at < key.valid_from:
            raise KeyLookupError("unknown-key", "Key is not valid yet.")
        return key

    def apply_rotation(
        self,
        statement: bytes | dict[str, Any],
        at: float | None = None,
        *,
        expected_factory: str | None = None,
    ) -> EnrolledKey:
        """Accept a key-rotation statement signed by the current (old) key and the new key.

        The same statement applied again is a no-op (it may arrive more than once over MQTT).
        """
        at = at if at is not None else time.time()
        try:
            value = strict_loads(statement) if isinstance(statement, bytes) else statement
            unverified = _unverified_payload(value)
            old = self.get(str(unverified.get("old_kid")))
            factory_id = str(unverified.get("factory_id"))
            if expected_factory is not None and factory_id != expected_factory:
                raise RegistryError("The statement names another factory than its topic.")
            if old is None or old.factory_id != factory_id:
                raise RegistryError("The old key is not an enrolled key of the factory.")
            new_jwk = unverified.get("new_jwk")
            if not isinstance(new_jwk, dict):
                raise RegistryError("The statement has no new_jwk.")
            verified = verify_general(value, Kind.KEYROTATE, [old.jwk, new_jwk]).payload
        except EnvelopeError as error:
            raise RegistryError(f"Rotation statement rejected: {error}") from None
        new_kid = thumbprint(new_jwk)
        if verified.get("new_kid") != new_kid:
            raise RegistryError("Rotation statement: new_kid is not the new key's thumbprint.")
        # The factory's reports wait until this rotation commits (several receivers): the
        # check of seqs already signed by the old key below must not race a report.
        self.db.lock_factory(factory_id)
        done = self.db.row(
            "SELECT rotated_from FROM rotations WHERE new_kid = :new_kid", {"new_kid": new_kid}
        )
        if done is not None and done[0] == old.kid:
            new = self.get(new_kid)
            assert new is not None
            return new
        if old.status != "active":
            raise RegistryError(
                f"Rotation statement signed by key {old.kid}, which is {old.status}: only the "
                "factory's active key can hand over to a new one."
            )
        first_seq = verified.get("effective_from_seq")
        if not isinstance(first_seq, int) or isinstance(first_seq, bool) or first_seq < 1:
            raise RegistryError(
                "Rotation statement names no effective_from_seq (the first report sequence "
                "number the new key signs). Fix: `tieragent keys rotate --config FILE`."
            )
        signed_after = self.db.scalar(
            "SELECT MAX(seq) FROM reports WHERE factory_id = :factory_id AND kid = :kid",
            {"factory_id": factory_id, "kid": old.kid},
        )
        if signed_after is not None and signed_after >= first_seq:
            raise RegistryError(
                f"Rotation statement: effective_from_seq {first_seq} is at or before seq "
                f"{signed_after}, already stored under the old key."
            )
        key = self.enroll(factory_id, new_jwk, at)
        self.db.execute(
            "INSERT INTO rotations (new_kid, rotated_from, statement, at, effective_from_seq) "
            "VALUES (:new_kid, :rotated_from, :statement, :at, :first_seq)",
            {"new_kid": key.kid, "rotated_from": old.kid, "statement": json.dumps(value),
             "at": at, "first_seq": first_seq},
        )
        self.db.execute(
            "UPDATE keys SET status = 'retired', retired_at = :at WHERE kid = :kid",
            {"at": at, "kid": old.kid},
        )
        rotated = self.get(key.kid)
        assert rotated is not None
        return rotated


def _unverified_payload(value: Any) -> dict[str, Any]:
    """Decode the payload only to learn which keys must have signed; verified right after."""
    if not isinstance(value, dict) or not isinstance(value.get("payload"), str):
        raise RegistryError("Not a JWS JSON general serialization.")
    try:
        decoded = b64url_json(value["payload"])
    except EnvelopeError:
        raise RegistryError("Rotation statement payload is not JSON.") from None
    if not isinstance(decoded, dict):
        raise RegistryError("Rotation statement payload is not an object.")
    return decoded
