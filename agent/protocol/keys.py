"""Ed25519 signing keys on disk: the files both the agent and the bureau tooling read.

Layout of a key directory:
    agent-key.pem             current private key, PKCS#8 PEM, mode 0600
    agent-key.jwk.json        its public JWK (with `kid`), for enrollment at the bureau
    retired/<kid>.pem         previous private keys after `rotate` (kept to prove history)
    rotation-<new kid>.json   the rotation statement (JWS JSON, signed by old and new key)

Files are written atomically (temp file, fsync, rename, directory fsync) so a crash
leaves either the old key or the new one. A passphrase, if any, comes from the
environment variable TIERAGENT_KEY_PASSPHRASE or a file (systemd LoadCredential), never
from argv. Nothing here ever prints or logs private key material.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

from agent.protocol.envelope import Kind, canonical_bytes, public_jwk, sign_general, thumbprint
from agent.protocol.errors import ProtocolError

PRIVATE_NAME = "agent-key.pem"
PUBLIC_NAME = "agent-key.jwk.json"
PASSPHRASE_ENV = "TIERAGENT_KEY_PASSPHRASE"


class KeyFileError(ProtocolError):
    """A key file problem; str() is one complete sentence naming the file and the fix."""


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically and durably with the given mode from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask may have narrowed or the file may have existed
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or an unlink in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_passphrase(passphrase_file: Path | None = None) -> bytes | None:
    """The key passphrase from a file, else from TIERAGENT_KEY_PASSPHRASE, else None."""
    if passphrase_file is not None:
        try:
            return passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as error:
            raise KeyFileError(
                f"{passphrase_file}: cannot read the passphrase file ({error.strerror})."
            ) from None
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def generate_key() -> OKPKey:
    return OKPKey.generate_key("Ed25519")


def private_pem(key: OKPKey, passphrase: bytes | None) -> bytes:
    raw = key.private_key
    if not isinstance(raw, Ed25519PrivateKey):
        raise KeyFileError("Only Ed25519 private keys can be stored.")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return raw.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def save_private_key(path: Path, key: OKPKey, passphrase: bytes | None) -> None:
    write_atomic(path, private_pem(key, passphrase), 0o600)


def load_private_key(path: Path, passphrase: bytes | None = None) -> OKPKey:
    """Load an Ed25519 PKCS#8 PEM; refuse files readable by group or others."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: key file not found. Fix: run `tieragent keys init --dir {path.parent}`."
        ) from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the key file ({error.strerror}).") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: key file is accessible by group or others (mode {stat.S_IMODE(mode):o}). "
            f"Fix: chmod 600 {path}."
        )
    try:
        raw = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise KeyFileError(
            f"{path}: the key is encrypted; set {PASSPHRASE_ENV} or pass --passphrase-file."
        ) from None
    except ValueError:
        raise KeyFileError(
            f"{path}: not a readable PKCS#8 PEM key, or the passphrase is wrong."
        ) from None
    if not isinstance(raw, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: the key is not Ed25519.")
    return OKPKey.import_key(raw)


def public_record(key: OKPKey) -> dict[str, str]:
    """Public JWK plus its `kid` (RFC 7638 thumbprint): what the operator enrolls."""
    jwk = public_jwk(key)
    return {**jwk, "kid": thumbprint(jwk)}


def init_keys(directory: Path, passphrase: bytes | None, *, force: bool = False) -> dict[str, str]:
    """Create the key pair in `directory`; refuses to overwrite an existing key unless forced."""
    private = directory / PRIVATE_NAME
    if private.exists() and not force:
        raise KeyFileError(
            f"{private}: a key already exists. Fix: `tieragent keys rotate` to replace it."
        )
    key = generate_key()
    save_private_key(private, key, passphrase)
    record = public_record(key)
    write_atomic(directory / PUBLIC_NAME, (json.dumps(record, indent=2) + "\n").encode(), 0o644)
    return record


def rotation_statement(
    old: OKPKey, new: OKPKey, *, factory_id: str, effective_from_seq: int | None, issued_at: str
) -> dict[str, Any]:
    """The key-rotation statement, signed by both keys (JWS JSON general serialization)."""
    payload = {
        "type": "tieragent-keyrotate/v1",
        "factory_id": factory_id,
        "old_kid": thumbprint(public_jwk(old)),
        "new_kid": thumbprint(public_jwk(new)),
        "new_jwk": public_jwk(new),
        "effective_from_seq": effective_from_seq,
        "issued_at": issued_at,
    }
    return sign_general(canonical_bytes(payload), [old, new], Kind.KEYROTATE)


def rotate_keys(
    directory: Path, passphrase: bytes | None, *, factory_id: str, effective_from_seq: int | None
) -> tuple[dict[str, str], Path]:
    """Replace the current key by a new one; keep the old one under retired/.

    Order matters for crash safety: the statement and the retired copy are written before
    the current key file is replaced, so no crash loses the old key.
    """
    private = directory / PRIVATE_NAME
    old = load_private_key(private, passphrase)
    new = generate_key()
    issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    statement = rotation_statement(
        old, new, factory_id=factory_id, effective_from_seq=effective_from_seq, issued_at=issued_at
    )
    old_kid = thumbprint(public_jwk(old))
    new_record = public_record(new)
    save_private_key(directory / "retired" / f"{old_kid}.pem", old, passphrase)
    old_record = (json.dumps(public_record(old), indent=2) + "\n").encode()
    write_atomic(directory / "retired" / f"{old_kid}.jwk.json", old_record, 0o644)
    statement_path = directory / f"rotation-{new_record['kid']}.json"
    write_atomic(statement_path, (json.dumps(statement, indent=2) + "\n").encode(), 0o644)
    save_private_key(private, new, passphrase)
    write_atomic(directory / PUBLIC_NAME, (json.dumps(new_record, indent=2) + "\n").encode(), 0o644)
    return new_record, statement_path
