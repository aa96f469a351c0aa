"""Envelope (JWS + canonical JSON) and key files: Z3 interop, RFC 8725 games, Z4 hygiene."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from joserfc.jwk import OKPKey
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws

from agent.protocol.chain import genesis_sha256
from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    public_jwk,
    sign_compact,
    strict_loads,
    thumbprint,
    verify_compact,
)
from agent.protocol.keys import init_keys, load_private_key, rotate_keys
from agent.protocol.period import Period
from bureau.registry import KeyRegistry
from bureau.store import SqliteReportStore
from tests.support.reports import FACTORY, make_report


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["seq"] = body["seq"] + 1
    return f"{header}.{_b64(canonical_bytes(body))}.{signature}"


def test_Z3_three_jose_libraries_agree_on_100_reports() -> None:
    """If 100 produced reports are verified by joserfc, jwcrypto and PyJWT (EdDSA), then all
    three accept every one and all three reject a tampered copy of each (Z3)."""
    key = OKPKey.generate_key("Ed25519")
    jwk = public_jwk(key)
    jwc_key = jwc_jwk.JWK(**jwk)
    pyjwt_key = jwt.PyJWK(jwk, algorithm="EdDSA").key
    accepted = rejected = 0
    base_report = make_report(
        key, Period("day", "2025-03-01", "Asia/Shanghai"), 1, genesis_sha256(FACTORY), devices=1
    )
    for n in range(100):
        token = sign_compact(canonical_bytes({**base_report, "seq": n + 1}), key, Kind.REPORT)
        bad = _tamper(token)
        ours = verify_compact(token, Kind.REPORT, jwk).payload["seq"] == n + 1
        jwc = jwc_jws.JWS()
        jwc.deserialize(token)
        jwc.verify(jwc_key, alg="EdDSA")
        pyjwt_ok = jwt.api_jws.decode_complete(token, pyjwt_key, algorithms=["EdDSA"])
        accepted += ours and bool(jwc.payload) and bool(pyjwt_ok["payload"])
        with pytest.raises(EnvelopeError):
            verify_compact(bad, Kind.REPORT, jwk)
        jwc_bad = jwc_jws.JWS()
        jwc_bad.deserialize(bad)
        with pytest.raises(jwc_jws.InvalidJWSSignature):
            jwc_bad.verify(jwc_key, alg="EdDSA")
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.api_jws.decode_complete(bad, pyjwt_key, algorithms=["EdDSA"])
        rejected += 1
    assert (accepted, rejected) == (100, 100)


def _token(header: dict[str, object], payload: bytes, sign: bytes = b"x" * 64) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(payload)}.{_b64(sign)}"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": Kind.REPORT.value},
        {"alg": "HS256", "kid": "K", "typ": Kind.REPORT.value},
        {"alg": "ES256", "kid": "K", "typ": Kind.REPORT.value},
        {"kid": "K", "typ": Kind.REPORT.value},
        {"alg": "EdDSA", "kid": "K", "typ": Kind.REPORT.value, "crit": ["exp"]},
        {"alg": "EdDSA", "kid": "K", "typ": Kind.REPORT.value, "jwk": {"kty": "OKP"}},
        {"alg": "EdDSA", "kid": "K", "typ": Kind.RECEIPT.value},
        {"alg": "EdDSA", "kid": "../../etc/passwd", "typ": Kind.REPORT.value},
    ],
    ids=["none", "hs256", "es256", "no-alg", "crit", "embedded-jwk", "wrong-typ", "kid-path"],
)
def test_B2_algorithm_and_header_games_are_rejected(header: dict[str, object]) -> None:
    """If the header plays an RFC 8725 game, then verification fails before any key use (B2)."""
    key = OKPKey.generate_key("Ed25519")
    jwk = public_jwk(key)
    header = {k: (thumbprint(jwk) if v == "K" else v) for k, v in header.items()}
    with pytest.raises(EnvelopeError) as caught:
        verify_compact(_token(header, b"{}"), Kind.REPORT, jwk)
    assert caught.value.reason in ("header", "format")


def test_hs256_with_public_key_as_secret_is_rejected() -> None:
    """If an attacker HMACs with the public key bytes, then the EdDSA-pinned verifier rejects."""
    key = OKPKey.generate_key("Ed25519")
    jwk = public_jwk(key)
    forged = jwt.api_jws.encode(
        b"{}",
        base64.urlsafe_b64decode(jwk["x"] + "="),
        algorithm="HS256",
        headers={"kid": thumbprint(jwk), "typ": Kind.REPORT.value},
    )
    with pytest.raises(EnvelopeError):
        verify_compact(forged, Kind.REPORT, jwk)


def test_B2_ed448_key_is_refused() -> None:
    """If the registered key is not OKP/Ed25519, then it cannot verify anything (B2)."""
    ed448 = OKPKey.generate_key("Ed448").as_dict(private=False)
    with pytest.raises(EnvelopeError) as caught:
        verify_compact(
            _token({"alg": "EdDSA", "kid": "a" * 43, "typ": Kind.REPORT.value}, b"{}"),
            Kind.REPORT,
            dict(ed448),
        )
    assert caught.value.reason in ("key", "header")


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 40 + b"1" + b"}" * 40,
        b"{bad json",
    ],
    ids=["dup-key", "nan", "inf", "bad-utf8", "deep-100k", "deep-40", "syntax"],
)
def test_strict_parser_rejects_json_edge_cases(data: bytes) -> None:
    """If the JSON has duplicate keys, NaN, bad UTF-8 or deep nesting, then strict_loads raises
    EnvelopeError('format') and nothing else (B10)."""
    with pytest.raises(EnvelopeError) as caught:
        strict_loads(data)
    assert caught.value.reason == "format"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**53, "\ud800"])
def test_canonical_bytes_rejects_out_of_domain_values(value: object) -> None:
    """If a value lies outside I-JSON, then canonicalisation refuses it with 'format'."""
    with pytest.raises(EnvelopeError) as caught:
        canonical_bytes({"v": value})
    assert caught.value.reason == "format"


def test_B9_non_canonical_signed_payload_is_rejected() -> None:
    """If a validly signed payload is not RFC 8785 canonical, then verification fails (B9)."""
    key = OKPKey.generate_key("Ed25519")
    for payload in (b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'{"a":"\\u0041"}'):
        token = sign_compact(payload, key, Kind.REPORT)
        with pytest.raises(EnvelopeError) as caught:
            verify_compact(token, Kind.REPORT, public_jwk(key))
        assert caught.value.reason == "format"


def test_key_init_writes_0600_and_show_prints_public_only(tmp_path: Path) -> None:
    """If keys are created, then the private file is 0600 and the public record has no 'd'."""
    record = init_keys(tmp_path, None)
    mode = stat.S_IMODE((tmp_path / "agent-key.pem").stat().st_mode)
    assert mode == 0o600
    assert "d" not in record and record["kid"] == thumbprint(record)
    assert load_private_key(tmp_path / "agent-key.pem").thumbprint() == record["kid"]


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    """If the key file is readable by others, then loading refuses with a fix in the message."""
    init_keys(tmp_path, None)
    os.chmod(tmp_path / "agent-key.pem", 0o644)
    with pytest.raises(Exception, match="chmod 600"):
        load_private_key(tmp_path / "agent-key.pem")


def test_encrypted_key_needs_the_passphrase(tmp_path: Path) -> None:
    """If the key is encrypted, then it loads with the passphrase and fails clearly without."""
    init_keys(tmp_path, b"s3cret")
    assert b"ENCRYPTED" in (tmp_path / "agent-key.pem").read_bytes()
    load_private_key(tmp_path / "agent-key.pem", b"s3cret")
    with pytest.raises(Exception, match="TIERAGENT_KEY_PASSPHRASE"):
        load_private_key(tmp_path / "agent-key.pem", None)


def test_rotation_statement_is_accepted_by_the_bureau(tmp_path: Path) -> None:
    """If the agent rotates, then the statement carries both signatures, the bureau registry
    adds the new key and retires the old one, and a statement signed by the new key alone is
    refused."""
    init_keys(tmp_path / "k", None)
    old = load_private_key(tmp_path / "k" / "agent-key.pem")
    store = SqliteReportStore(tmp_path / "bureau.db")
    registry = KeyRegistry(store.db)
    registry.enroll(FACTORY, public_jwk(old))
    record, statement = rotate_keys(tmp_path / "k", None, factory_id=FACTORY, effective_from_seq=5)
    value = json.loads(statement.read_text())
    assert len(value["signatures"]) == 2
    forged = {**value, "signatures": value["signatures"][1:]}
    with pytest.raises(Exception, match="signature"):
        registry.apply_rotation(forged)
    key = registry.apply_rotation(statement.read_bytes(), expected_factory=FACTORY)
    assert key.kid == record["kid"] and key.factory_id == FACTORY
    assert registry.get(thumbprint(public_jwk(old))).status == "retired"  # type: ignore[union-attr]


def test_Z4_no_secret_in_key_command_output_or_logs(tmp_path: Path) -> None:
    """If keys init/show/rotate run with debug logging, then no PEM header and no private 'd'
    appears in their output, and no key material is passed on argv (Z4)."""
    env = {**os.environ, "TIERAGENT_KEY_PASSPHRASE": "pp-123"}
    outputs = []
    for args in (
        ["keys", "init", "--dir", str(tmp_path)],
        ["keys", "show", "--dir", str(tmp_path)],
        ["keys", "rotate", "--dir", str(tmp_path), "--factory", FACTORY,
         "--effective-from-seq", "1"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "tieragent", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
    logging.getLogger().debug("done")
    key = load_private_key(tmp_path / "agent-key.pem", b"pp-123")
    secret_d = str(key.as_dict(private=True)["d"])
    text = "\n".join(outputs)
    assert "PRIVATE KEY" not in text and secret_d not in text and "pp-123" not in text
    assert stat.S_IMODE((tmp_path / "agent-key.pem").stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.glob("retired/*.pem"))


def test_nesting_depth_ignores_brackets_inside_strings() -> None:
    """The depth bound counts containers, not bracket characters inside string values
    (escaped quotes included), and still refuses one level too many."""
    from agent.protocol.envelope import MAX_JSON_DEPTH, EnvelopeError, strict_loads

    tricky = '{"a": "[[[\\"{{{ \\\\", "b": [[1, {"c": "]]]"}]], "d": "\\\\"}'
    assert strict_loads(tricky.encode())["b"] == [[1, {"c": "]]]"}]]
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    strict_loads(at_limit.encode())
    with pytest.raises(EnvelopeError, match="nesting"):
        strict_loads(("[" + at_limit + "]").encode())
    strings = '["' + "[" * (MAX_JSON_DEPTH + 5) + '"]'
    assert strict_loads(strings.encode()) == ["[" * (MAX_JSON_DEPTH + 5)]
