"""The gateway's side of a key rotation: deliver the statement, then forget the old key.

`tieragent keys rotate` leaves in the key folder `rotation-<new kid>.json` (signed by the old
and the new key) and the old private key under `retired/<old kid>.pem`. Until the bureau has
acknowledged the rotation the old private key is kept: the reports already queued under it
must still be deliverable, and the rotation may have to be redone. The acknowledgement is a
bureau receipt (accepted or duplicate) for a report signed by the new key: the bureau only
accepts one once it holds the rotation. Then the retired private key is deleted, so a
stolen gateway disk cannot sign with it; its public JWK stays to verify history.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from agent.protocol.envelope import EnvelopeError, b64url_json
from agent.protocol.keys import fsync_directory

log = logging.getLogger("tieragent.keys")


@dataclass(frozen=True, slots=True)
class PendingRotation:
    """A rotation whose old private key is still on disk (not yet acknowledged)."""

    old_kid: str
    new_kid: str
    statement: bytes
    retired_private: Path


def pending_rotations(key_dir: Path) -> list[PendingRotation]:
    """Every rotation statement in `key_dir` whose retired private key still exists."""
    pending: list[PendingRotation] = []
    for path in sorted(key_dir.glob("rotation-*.json")):
        try:
            statement = path.read_bytes()
            signed = json.loads(statement)
            # The folder is the agent's own; the kids are read only to find the retired
            # file, and the bureau verifies both signatures.
            payload = b64url_json(signed["payload"])
            old_kid, new_kid = str(payload["old_kid"]), str(payload["new_kid"])
        except (OSError, ValueError, KeyError, TypeError, EnvelopeError) as error:
            log.warning("Key rotation statement %s is unreadable (%s); skipped.", path, error)
            continue
        retired = key_dir / "retired" / f"{old_kid}.pem"
        if retired.exists() and "/" not in old_kid and old_kid not in ("", ".", ".."):
            pending.append(PendingRotation(old_kid, new_kid, statement, retired))
    return pending


def complete_rotation(rotation: PendingRotation) -> None:
    """Delete the retired private key of an acknowledged rotation (durably)."""
    rotation.retired_private.unlink(missing_ok=True)
    fsync_directory(rotation.retired_private.parent)
    log.info(
        "The bureau acknowledged the rotation from key %s to %s; the retired private key was "
        "deleted (its public key stays in retired/ to verify earlier reports).",
        rotation.old_kid, rotation.new_kid,
        extra={"fields": {"old_kid": rotation.old_kid, "new_kid": rotation.new_kid}},
    )
