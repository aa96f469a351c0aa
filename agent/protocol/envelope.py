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

import numpy as np
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

from agent.protocol.canonical import fast_canonical_bytes, fast_canonical_form
from agent.protocol.errors import ProtocolError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32
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
    if not isinstance(header["kid"], str) or not _KID.match(header["kid"]):
        raise EnvelopeError("header", "JWS kid is not an RFC 7638 thumbprint.")
    return {str(k): str(v) for k, v in header.items()}


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


# What the C encoder prints otherwise than RFC 8785, once its output equals the payload: a
# float in exponent form ("1e-05", "1e+16"), an integral float
# ("3.0", ending a number before ',', ']' or '}'), an integer of 16 digits or more (it may
# exceed 2^53 - 1), and member names beyond U+FFFF (code points sort otherwise than UTF-16
# code units). Plain substring searches (a regular expression over a 16 KB report cost
# 0.45 ms); a string that looks alike only costs the strict path.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_INTEGRAL_ENDS = (b".0,", b".0]", b".0}")
# Python writes an exponent as e-NN, e+NN or with three digits, and a number ends at ',', ']'
# or '}' (a UUID's "9e-6e30" is no exponent).
_EXPONENTS = tuple(
    b"0e" + sign + digits + end
    for sign in (b"-", b"+") for digits in (b"00", b"000") for end in (b",", b"]", b"}")
)
_LONG_NUMBER = b"0" * 16


# The two lists above as one pass each over the payload (fifteen substring searches of a
# 16 KB report cost ≈0.1 ms).
_INTEGRAL_END = re.compile(b"|".join(re.escape(end) for end in _INTEGRAL_ENDS))
_EXPONENT = re.compile(b"|".join(re.escape(e) for e in _EXPONENTS))


def _surely_canonical_numbers(payload: bytes) -> bool:
    if _INTEGRAL_END.search(payload):
        return False
    digits = payload.translate(_DIGITS_AS_ZERO)
    if _EXPONENT.search(digits):
        return False
    # Runs of 16+ digits after a '.' are fractions; any other adds to the first count only.
    return digits.count(_LONG_NUMBER) == digits.count(b"." + _LONG_NUMBER)


_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_STRING_SPAN = re.compile(rb'"[^"]*"')


def _compact_depth(payload: bytes) -> int:
    """`_depth` of compact JSON bytes by C-speed passes: escaped backslashes and quotes
    dropped (left to right, as a JSON parser pairs them), then everything but brackets and
    quotes, then the (now bracket-only) strings."""
    plain = payload.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = np.frombuffer(_STRING_SPAN.sub(b"", plain), dtype=np.uint8)
    if not len(brackets):
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def parse_unverified(payload: bytes) -> Any | None:
    """`payload` parsed by the C parser as `_canonical_parse` parses it (NaN and Infinity
    refused), or None when it is not such JSON. For a verifier that wants the ids a payload
    claims before its signature is checked (to send its look-ups early), and then hands the
    value to `verify_compact` instead of parsing twice. Nothing in it is trusted before that."""
    try:
        return json.loads(payload.decode("utf-8", errors="strict"),
                          parse_constant=_reject_constant)
    except (EnvelopeError, ValueError, RecursionError, UnicodeError):
        return None


def _canonical_parse(payload: bytes, parsed: Any = None) -> Any | None:
    """The parse of `payload` when it is surely canonical JSON within our limits, else None.
    `parsed`: `parse_unverified(payload)`, when the caller has it.

    The bureau verifies thousands of reports a second, and the strict path (a duplicate-member
    hook, then a canonical re-encoding in Python) costs about 0.6 ms a report. Here: the C
    parser, then the C encoder must give back exactly `payload`. Equal bytes rule out
    duplicate members (the parse would have fewer), whitespace, escapes and member order other
    than RFC 8785's; `_surely_canonical_numbers` rules out the number forms where Python and
    RFC 8785 print differently; the depth bound is checked as in `strict_loads`. Anything
    else returns None and takes the strict path (tests/delivery/test_canonical_fast.py holds
    the two to the same verdict).
    """
    if not payload.startswith(b"{") or not _surely_canonical_numbers(payload):
        return None  # (and a bare value: "1.0" would pass the checks above)
    try:
        text = payload.decode("utf-8", errors="strict")
        if not text.isascii() and max(text) > "\uffff":
            return None
        value = json.loads(text, parse_constant=_reject_constant) if parsed is None else parsed
        if _CANONICAL_ENCODER.encode(value).encode("utf-8") != payload:
            return None
    except (EnvelopeError, ValueError, RecursionError, UnicodeError):
        return None
    if _compact_depth(payload) > MAX_JSON_DEPTH:
        return None
    return value


_CANONICAL_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"),
    check_circular=False,
)


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
