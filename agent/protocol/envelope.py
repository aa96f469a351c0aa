"""The signed envelope of every tieragent message: canonical JSON inside a JWS (Ed25519).

Defined once here; the agent signs with it and the bureau verifies with it.

- Payload bytes are RFC 8785 canonical JSON (`canonical_bytes`); they are the only bytes
  ever hashed or signed, and they travel verbatim inside the JWS.
- Reports and receipts are JWS Compact; key-rotation statements use the JSON general
  serialization because they carry two signatures (old and new key).
- The header is exactly `{"alg","kid","typ"}`. We emit `alg: "EdDSA"` (every JOSE library
  verifies it today) and accept `EdDSA` or `Ed25519` (RFC 9864), but only with an
  OKP/Ed25519 key: the algorithm is pinned by the key, never trusted from the header.
- Verification runs in the order of docs/reliability.md §b.5: size, header, key, signature,
  strict parse, canonical form. Every failure is an `EnvelopeError` with a short reason
  code (`size`, `header`, `key`, `signature`, `format`) that the bureau puts in receipts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import json
import re
import weakref
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from agent.protocol.canonical import fast_canonical_bytes, fast_canonical_form
from agent.protocol.canonical_parse import MAX_JSON_DEPTH, _canonical_parse
from agent.protocol.errors import ProtocolError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
ACCEPTED_ALGS = ("EdDSA", "Ed25519")
EMITTED_ALG = "EdDSA"
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 thumbprint
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Kind(StrEnum):
    """Explicit `typ` per message kind (RFC 8725 §3.11): one key's signatures never cross kinds."""

    REPORT = "tieragent-report+jws"
    RECEIPT = "tieragent-receipt+jws"
    KEYROTATE = "tieragent-keyrotate+jws"
    ENROLL = "tieragent-enroll+jws"
    EVIDENCE = "tieragent-evidence+jws"  # the bureau's seal on an evidence folder's manifest
    LOG_HEAD = "tieragent-log-head+jws"  # the bureau's signed tree head (agent.protocol.translog)


class EnvelopeError(ProtocolError):
    """A message that is not a valid envelope; `reason` is a short code, str() a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Registry(JWSRegistry):
    """joserfc's registry with our size limits and without its EdDSA deprecation warning.

    We knowingly emit `EdDSA` (docs/reliability.md §a.4: PyJWT cannot verify `Ed25519` yet) and pin
    the curve ourselves, so the library's warning would only add noise to every message.
    """

    max_payload_length = MAX_MESSAGE_BYTES
    max_header_length = 512

    def get_alg(self, name: str) -> Any:
        if name not in ACCEPTED_ALGS or name not in self.algorithms:
            return super().get_alg(name)  # raises the library's "not allowed" error
        return self.algorithms[name]


_REGISTRY = _Registry(algorithms=list(ACCEPTED_ALGS))


@dataclass(frozen=True, slots=True)
class Verified:
    """A verified message: the protected header, the exact payload bytes and their parse."""

    header: dict[str, str]
    payload_bytes: bytes
    payload: Any

    @property
    def payload_sha256(self) -> str:
        return sha256_hex(self.payload_bytes)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 bytes of `value`; raises EnvelopeError('format') for NaN/Inf, |int| > 2^53-1,
    lone surrogates or unsupported types (rfc8785 raises UnicodeEncodeError for the latter).

    Most values take a fast path that gives the same bytes (agent.protocol.canonical: the C
    JSON encoder on a copy whose floats print as ECMAScript prints them); anything it is not
    sure of (or any error) goes to the rfc8785 library, whose answer is authoritative.
    """
    fast = fast_canonical_bytes(value)
    if fast is not None:
        return fast
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, TypeError, ValueError) as error:
        raise EnvelopeError("format", f"Value is outside canonical JSON: {error}.") from None


def canonical_form(value: Any) -> tuple[bytes, Any]:
    """`canonical_bytes(value)` and `json.loads` of those bytes (what a verifier parses),
    without parsing them when the fast path made that copy already."""
    form = fast_canonical_form(value)
    if form is not None:
        return form
    payload = canonical_bytes(value)
    return payload, json.loads(payload)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise EnvelopeError("format", f"Duplicate JSON member {key!r}.")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise EnvelopeError("format", f"JSON constant {name} is not allowed.")


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _depth(text: str) -> int:
    """Nesting depth of a valid JSON text: brackets outside strings, counted in one pass
    (2.4x faster than walking the parsed value; a recursive walk would be the attack
    surface itself)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def strict_loads(data: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON strictly: UTF-8 only, no duplicate members, no NaN/Infinity, bounded depth.

    Raises EnvelopeError('format'); never lets a parser exception escape.
    """
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise EnvelopeError("format", "Payload is not valid UTF-8.") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except EnvelopeError:
        raise
    except RecursionError:
        raise EnvelopeError("format", "JSON nesting is too deep.") from None
    except ValueError as error:
        raise EnvelopeError("format", f"Payload is not JSON: {error}.") from None
    if _depth(text) > max_depth:
        raise EnvelopeError("format", f"JSON nesting exceeds {max_depth} levels.")
    return value


def _b64url_decode(part: bytes, what: str) -> bytes:
    # Every byte in the alphabet (one deletion pass; a regular expression over a 16 KB
    # payload cost more), but for one final newline, which the expression this replaces
    # (`^[A-Za-z0-9_-]*$`) let through: the same verdicts.
    body = part[:-1] if part.endswith(b"\n") else part
    if body.translate(None, _B64URL_ALPHABET):
        raise EnvelopeError("header", f"JWS {what} is not base64url.")
    try:
        return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise EnvelopeError("header", f"JWS {what} is not base64url.") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def check_header(header: Any, kind: Kind) -> dict[str, str]:
    """Exactly alg/kid/typ, alg accepted, typ exact, kid shaped like a thumbprint."""
    if not isinstance(header, dict) or set(header) != _HEADER_MEMBERS:
        raise EnvelopeError("header", "JWS header must have exactly the members alg, kid, typ.")
    if header["alg"] not in ACCEPTED_ALGS:
        raise EnvelopeError("header", f"JWS alg {str(header['alg'])[:20]!r} is not accepted.")
    if header["typ"] != kind.value:
        raise EnvelopeError("header", f"JWS typ is not {kind.value!r}.")
    if not is_thumbprint(header["kid"]):
        raise EnvelopeError("header", "JWS kid is not an RFC 7638 thumbprint.")
    return {str(k): str(v) for k, v in header.items()}


def is_thumbprint(kid: object) -> bool:
    """Shaped like an RFC 7638 SHA-256 thumbprint (43 base64url characters): every kid."""
    return isinstance(kid, str) and _KID.match(kid) is not None


def peek_compact(token: bytes | str, kind: Kind) -> tuple[dict[str, str], bytes]:
    """Size check, split and strict header check of a compact JWS, before any key lookup.

    Returns the header and the (still unverified) payload bytes.
    """
    raw = token.encode("ascii", errors="replace") if isinstance(token, str) else token
    if len(raw) > MAX_MESSAGE_BYTES:
        raise EnvelopeError("size", f"Message exceeds {MAX_MESSAGE_BYTES} bytes.")
    parts = raw.strip().split(b".")
    if len(parts) != 3:
        raise EnvelopeError("header", "Not a compact JWS (three dot-separated parts).")
    header = strict_loads(_b64url_decode(parts[0], "header"), max_depth=2)
    return check_header(header, kind), _b64url_decode(parts[1], "payload")


def unverified_payload(token: bytes | str, kind: Kind) -> dict[str, Any]:
    """The JSON object a compact JWS carries, WITHOUT checking its signature.

    For tokens verified earlier (a stored report, an outbox row, a bundle checked
    separately) and for learning which key to verify with.
    """
    _, payload = peek_compact(token, kind)
    value = strict_loads(payload)
    if not isinstance(value, dict):
        raise EnvelopeError("format", "JWS payload is not a JSON object.")
    return value


def payload_sha256(token: bytes | str) -> str:
    """SHA-256 (hex) of a compact JWS's payload bytes: the hash chain's link value."""
    raw = token.encode("ascii", errors="replace") if isinstance(token, str) else token
    parts = raw.strip().split(b".")
    if len(parts) != 3:
        raise EnvelopeError("header", "Not a compact JWS (three dot-separated parts).")
    return sha256_hex(_b64url_decode(parts[1], "payload"))


def b64url_json(part: str) -> Any:
    """A base64url JSON member of a JWS JSON serialization (strict JSON rules)."""
    return strict_loads(_b64url_decode(part.encode("ascii", errors="replace"), "payload"))


def public_okp(jwk: dict[str, Any]) -> OKPKey:
    """Import a public JWK, requiring OKP/Ed25519 and no private part."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise EnvelopeError("key", "Key is not an OKP/Ed25519 public key.")
    if "d" in jwk:
        raise EnvelopeError("key", "Expected a public key, got a private one.")
    try:
        return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
    except (JoseError, ValueError, TypeError, KeyError):
        raise EnvelopeError("key", "Public key is malformed.") from None


def _pinned_key(jwk: dict[str, Any]) -> tuple[OKPKey, str]:
    """`public_okp(jwk)` and its thumbprint, imported once per key: the bureau verifies
    every report of a factory with the same key (≈0.1 ms a report otherwise)."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise EnvelopeError("key", "Key is not an OKP/Ed25519 public key.")
    if "d" in jwk:
        raise EnvelopeError("key", "Expected a public key, got a private one.")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise EnvelopeError("key", "Public key is malformed.")
    return _key_of(x)


@functools.lru_cache(maxsize=4096)
def _key_of(x: str) -> tuple[OKPKey, str]:
    members = {"kty": "OKP", "crv": "Ed25519", "x": x}
    return public_okp(members), thumbprint(members)


def public_jwk(key: OKPKey) -> dict[str, str]:
    """The public JWK members of an Ed25519 key, with nothing private."""
    data = key.as_dict(private=False)
    return {"kty": "OKP", "crv": "Ed25519", "x": str(data["x"])}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (the `kid`) of an OKP public JWK."""
    members = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    return _b64url(hashlib.sha256(canonical_bytes(members)).digest())


def _require_ed25519_private(key: OKPKey) -> None:
    if key.as_dict(private=False).get("crv") != "Ed25519" or not key.is_private:
        raise EnvelopeError("key", "Signing needs a private OKP/Ed25519 key.")


def sign_compact(payload: bytes, key: OKPKey, kind: Kind) -> str:
    """Compact JWS over the exact `payload` bytes (callers pass `canonical_bytes(...)`).

    The bytes joserfc's `serialize_compact` gives (its header JSON, then Ed25519, which is
    deterministic), signed with `cryptography` directly and the key's header kept per kind:
    the bureau signs two tokens per report (receipt and log head), and joserfc's checks and
    the thumbprint per call were half of that cost (tests/delivery/test_sign_compact.py
    compares the two)."""
    private, protected = _signer(key, kind)
    signing_input = protected + b"." + _b64url(payload).encode("ascii")
    return f"{signing_input.decode('ascii')}.{_b64url(private.sign(signing_input))}"


def sign_compact_joserfc(payload: bytes, key: OKPKey, kind: Kind) -> str:
    """`sign_compact` through joserfc, the reference its bytes are held to."""
    _require_ed25519_private(key)
    kid = thumbprint(public_jwk(key))
    header = {"alg": EMITTED_ALG, "kid": kid, "typ": kind.value}
    return jws.serialize_compact(header, payload, key, algorithms=[EMITTED_ALG], registry=_REGISTRY)


# Per signing key (by identity, OKPKey is not hashable; the weak reference tells a reused id
# from the same key): its private key and base64url header per kind.
_SIGNERS: dict[int, tuple[weakref.ref[OKPKey], Ed25519PrivateKey, dict[Kind, bytes]]] = {}
_SIGNERS_KEPT = 64


def _signer(key: OKPKey, kind: Kind) -> tuple[Ed25519PrivateKey, bytes]:
    entry = _SIGNERS.get(id(key))
    if entry is None or entry[0]() is not key:
        _require_ed25519_private(key)
        private = key.private_key
        if not isinstance(private, Ed25519PrivateKey):
            raise EnvelopeError("key", "Signing needs a private OKP/Ed25519 key.")
        if len(_SIGNERS) >= _SIGNERS_KEPT:
            _SIGNERS.clear()
        entry = _SIGNERS[id(key)] = (weakref.ref(key), private, {})
    headers = entry[2]
    protected = headers.get(kind)
    if protected is None:
        header = {"alg": EMITTED_ALG, "kid": thumbprint(public_jwk(key)), "typ": kind.value}
        # joserfc's header encoding (joserfc.util.json_b64encode), member order as given.
        text = json.dumps(header, ensure_ascii=True, separators=(",", ":"))
        protected = headers[kind] = _b64url(text.encode("ascii")).encode("ascii")
    return entry[1], protected


def _verified_payload(header: dict[str, str], payload: bytes, parsed: Any = None) -> Verified:
    value = _canonical_parse(payload, parsed)
    if value is None:  # the authoritative path decides, and names the problem
        value = strict_loads(payload)
        if canonical_bytes(value) != payload:
            raise EnvelopeError("format", "Payload is not in RFC 8785 canonical form.")
    return Verified(header=header, payload_bytes=payload, payload=value)


def verify_compact(
    token: bytes | str,
    kind: Kind,
    jwk: dict[str, Any],
    *,
    peeked: tuple[dict[str, str], bytes] | None = None,
    parsed: Any = None,
) -> Verified:
    """Verify a compact JWS with one pinned public key, then parse strictly.

    The caller chose `jwk` from its registry by the header's `kid` (see `peek_compact`);
    this function checks again that the `kid` is that key's thumbprint. `peeked`: what
    `peek_compact(token, kind)` returned, when the caller has it already; `parsed`: what
    `parse_unverified` gave for its payload (the canonical-form check still runs on it).

    The signature is checked with `cryptography`'s Ed25519 directly (what joserfc calls for
    EdDSA), over the token's own first two parts: the header was checked strictly above and
    the algorithm is pinned by the key, so joserfc's re-parsing only cost time (≈60 µs of
    the bureau's ≈1 ms per report).
    """
    header, payload = peeked if peeked is not None else peek_compact(token, kind)
    key, kid = _pinned_key(jwk)
    if header["kid"] != kid:
        raise EnvelopeError("key", "JWS kid does not name the given key.")
    raw = token.encode("ascii", errors="replace") if isinstance(token, str) else token
    protected, body, signature_b64 = raw.strip().split(b".")
    try:
        signature = _b64url_decode(signature_b64, "signature")
        # One encoding per signature: base64's unused trailing bits must be zero, or flipped
        # bits in them would give a second valid token.
        if _b64url(signature).encode("ascii") != signature_b64:
            raise EnvelopeError("signature", "JWS signature is not canonical base64url.")
        public = key.public_key
        if not isinstance(public, Ed25519PublicKey):  # public_okp admits Ed25519 only
            raise EnvelopeError("key", "Key is not an OKP/Ed25519 public key.")
        public.verify(signature, protected + b"." + body)
    except (EnvelopeError, InvalidSignature, ValueError, TypeError):
        raise EnvelopeError("signature", "JWS signature does not verify.") from None
    return _verified_payload(header, payload, parsed)


def sign_general(payload: bytes, keys: list[OKPKey], kind: Kind) -> dict[str, Any]:
    """JWS JSON general serialization with one signature per key (key rotation)."""
    members: list[Any] = []
    for key in keys:
        _require_ed25519_private(key)
        kid = thumbprint(public_jwk(key))
        members.append({"protected": {"alg": EMITTED_ALG, "kid": kid, "typ": kind.value}})

    def pick(obj: Any) -> OKPKey:
        kid = obj.headers()["kid"]
        return next(k for k in keys if thumbprint(public_jwk(k)) == kid)

    result = jws.serialize_json(
        members, payload, pick, algorithms=[EMITTED_ALG], registry=_REGISTRY
    )
    return dict(result)


def verify_general(value: Any, kind: Kind, jwks: list[dict[str, Any]]) -> Verified:
    """Verify a general-serialization JWS that must carry a valid signature by EVERY key given."""
    if not isinstance(value, dict) or not isinstance(value.get("signatures"), list):
        raise EnvelopeError("format", "Not a JWS JSON general serialization.")
    signatures = value["signatures"]
    if len(signatures) != len(jwks) or not isinstance(value.get("payload"), str):
        raise EnvelopeError("signature", f"Expected exactly {len(jwks)} signatures.")
    payload_b64 = value["payload"].encode("ascii", errors="replace")
    header: dict[str, str] = {}
    for jwk in jwks:
        kid = thumbprint(jwk)
        match = None
        for member in signatures:
            if not isinstance(member, dict) or set(member) != {"protected", "signature"}:
                raise EnvelopeError("header", "Signature members must be protected + signature.")
            candidate = check_header(
                strict_loads(
                    _b64url_decode(str(member["protected"]).encode(), "header"), max_depth=2
                ),
                kind,
            )
            if candidate["kid"] == kid:
                match = member
                header = candidate
        if match is None:
            raise EnvelopeError("signature", f"No signature by key {kid}.")
        compact = f"{match['protected']}.{payload_b64.decode()}.{match['signature']}"
        verify_compact(compact, kind, jwk)
    return _verified_payload(header, _b64url_decode(payload_b64, "payload"))
