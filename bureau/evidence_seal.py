"""The bureau's seal on an evidence folder: `manifest.jws` signs the manifest's SHA-256.

The manifest holds the bureau's view of the factory's keys (`keys`: each key's public JWK,
status and validity window by sequence number and by time), so the seal covers which keys
may have signed which reports. `verify` checks the seal with a pinned bureau key
(`--bureau-key`), or, without one, with the folder's own `bureau.jwk.json` and says that this
proves only integrity; then every report's `kid` against the sealed key view, and the
folder's `keys/` files and `keys.json` against it. A report signed by a key the bureau never
enrolled fails, however `keys/`, `keys.json` and the manifest's hashes were edited: the
attacker cannot sign a new seal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc.jwk import OKPKey

from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    peek_compact,
    public_jwk,
    sha256_hex,
    sign_compact,
    thumbprint,
    verify_compact,
)
from bureau.registry import EnrolledKey

SEAL_NAME = "manifest.jws"
BUREAU_KEY_NAME = "bureau.jwk.json"
SEAL_TYPE = "tieragent-evidence-seal/v1"


def key_view(keys: Sequence[EnrolledKey]) -> list[dict[str, Any]]:
    """The bureau's view of a factory's keys, as sealed into the manifest."""
    return [
        {
            "kid": key.kid,
            "jwk": dict(key.jwk),
            "status": key.status,
            "valid_from": iso(key.valid_from),
            "revoked_at": iso(key.revoked_at),
            "retired_at": iso(key.retired_at),
            "from_seq": key.from_seq,
            "until_seq": key.until_seq,
        }
        for key in keys
    ]


def seal(
    manifest: bytes, factory_id: str, year: int, keys: list[dict[str, Any]], key: OKPKey
) -> str:
    """The compact JWS over the manifest's SHA-256 and the factory's key view (in the seal
    itself, so that an edited manifest cannot hide which keys the bureau enrolled)."""
    payload = {
        "type": SEAL_TYPE,
        "factory_id": factory_id,
        "year": year,
        "keys": keys,
        "manifest_sha256": sha256_hex(manifest),
        "sealed_at": iso(datetime.now(UTC).timestamp()),
    }
    return sign_compact(canonical_bytes(payload), key, Kind.EVIDENCE)


def bureau_jwk_text(key: OKPKey) -> str:
    return json.dumps(public_jwk(key), indent=2, sort_keys=True) + "\n"


def check_seal(
    path: Path,
    manifest: Mapping[str, Any],
    raw: bytes,
    pinned: Sequence[Mapping[str, Any]] | None,
    problems: list[str],
    notes: list[str],
) -> dict[str, dict[str, Any]]:
    """Check manifest.jws; return the sealed key view by kid ({} when the seal fails)."""
    try:
        token = (path / SEAL_NAME).read_text(encoding="ascii").strip()
        header, _ = peek_compact(token, Kind.EVIDENCE)
    except (OSError, UnicodeDecodeError):
        problems.append(f"{SEAL_NAME}: missing; the folder is not sealed by the bureau.")
        return {}
    except EnvelopeError as error:
        problems.append(f"{SEAL_NAME}: not a bureau seal ({error}).")
        return {}
    keys = {thumbprint(dict(jwk)): dict(jwk) for jwk in pinned or ()}
    if pinned is None:
        try:
            own = json.loads((path / BUREAU_KEY_NAME).read_text(encoding="utf-8"))
            keys = {thumbprint(own): own}
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{BUREAU_KEY_NAME}: missing or not a public key ({error}).")
            return {}
        notes.append(
            f"Bureau key not pinned: the seal was checked with the folder's own {BUREAU_KEY_NAME} "
            f"(kid {header['kid']}), which proves integrity only; give --bureau-key with the "
            "bureau's published key to prove who sealed it."
        )
    jwk = keys.get(header["kid"])
    if jwk is None:
        problems.append(
            f"{SEAL_NAME}: sealed by bureau key {header['kid']}, which is not the pinned "
            "bureau key."
        )
        return {}
    try:
        sealed = verify_compact(token, Kind.EVIDENCE, jwk).payload
    except EnvelopeError as error:
        problems.append(f"{SEAL_NAME}: the bureau's signature does not verify ({error}).")
        return {}
    if (sealed.get("factory_id"), sealed.get("year")) != (
        manifest.get("factory_id"), manifest.get("year")
    ):
        problems.append(f"{SEAL_NAME}: seals another factory or year than the manifest names.")
    if sealed.get("manifest_sha256") != sha256_hex(raw):
        problems.append(
            "manifest.json: not the manifest the bureau sealed (its SHA-256 differs from "
            f"{SEAL_NAME}); it was edited after export."
        )
    sealed_keys = [k for k in sealed.get("keys") or [] if isinstance(k, dict)]
    if manifest.get("keys") != sealed_keys:
        problems.append("manifest.json: its key list differs from the one the bureau sealed.")
    notes.append(f"Sealed by bureau key {header['kid']} at {sealed.get('sealed_at')}.")
    view = {str(k.get("kid")): dict(k) for k in sealed_keys}
    for kid, key in view.items():
        notes.append(f"Factory key {kid}: {window_text(key)}.")
    _check_key_files(path, view, problems)
    return view


def _check_key_files(
    path: Path, view: Mapping[str, Mapping[str, Any]], problems: list[str]
) -> None:
    """keys/ and keys.json must be exactly the sealed key view."""
    for file in sorted((path / "keys").glob("*.jwk.json")):
        kid = file.name.removesuffix(".jwk.json")
        key = view.get(kid)
        try:
            jwk = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            jwk = None
        if key is None:
            problems.append(
                f"keys/{file.name}: key {kid} is not in the bureau's sealed key list (added "
                "after export)."
            )
        elif jwk != key.get("jwk"):
            problems.append(f"keys/{file.name}: differs from the bureau's sealed key {kid}.")
    try:
        listed = json.loads((path / "keys.json").read_text(encoding="utf-8"))
        kids = {str(item["kid"]) for item in listed}
    except (OSError, ValueError, KeyError, TypeError):
        problems.append("keys.json: missing or unreadable.")
        return
    if kids != set(view):
        extra = ", ".join(sorted(kids - set(view))) or "none"
        problems.append(
            f"keys.json: lists other keys than the bureau's sealed key list (not sealed: {extra})."
        )


def check_report_key(
    view: Mapping[str, Mapping[str, Any]], kid: str, seq: int, label: str, problems: list[str]
) -> None:
    """A report's key must be in the sealed view and its seq inside the key's window."""
    key = view.get(kid)
    if key is None:
        problems.append(
            f"{label}: signed by key {kid}, which the bureau never enrolled for this factory "
            "(not in its sealed key list)."
        )
        return
    from_seq, until_seq = key.get("from_seq"), key.get("until_seq")
    if (isinstance(from_seq, int) and seq < from_seq) or (
        isinstance(until_seq, int) and seq >= until_seq
    ):
        problems.append(f"{label}: seq {seq} lies outside key {kid}'s window ({window_text(key)}).")


def window_text(key: Mapping[str, Any]) -> str:
    seqs = f"seq {key.get('from_seq') or 1}..{_until(key.get('until_seq'))}"
    times = f"from {key.get('valid_from')}"
    if key.get("revoked_at"):
        times += f", revoked {key['revoked_at']}"
    elif key.get("retired_at"):
        times += f", retired {key['retired_at']}"
    return f"{key.get('status')}, {seqs}, {times}"


def _until(until_seq: Any) -> str:
    return str(until_seq - 1) if isinstance(until_seq, int) else "(open)"


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
