"""Z1: fuzzing the bureau's report intake and the wire contract's envelope parsing
(docs/reliability.md §c). Declared errors: `Receiver.handle` and `Verifier.check` raise
nothing (every failure is a Decision and a signed `rejected` receipt); the envelope functions
of agent/protocol/envelope.py raise `EnvelopeError` only.

Inputs start from the report corpus (tests/fuzz/corpus/report/: a real chain of day, month,
year and revision reports): real tokens (their key is not enrolled here) with bytes broken;
the payloads signed again with the enrolled key after structured mutation (so the strict
parse, schema, chain and indicator checks see them), with duplicate members or broken bytes
inside the signature; hostile headers signed with the enrolled key; random bytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import OKPKey

from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    payload_sha256,
    peek_compact,
    public_jwk,
    sign_compact,
    strict_loads,
    thumbprint,
    unverified_payload,
    verify_compact,
    verify_general,
)
from agent.protocol.mqtt import report_topic, rotation_topic
from tests.fuzz.limits import traced, within_memory
from tests.fuzz.mutations import (
    corpus_bytes,
    duplicate_member,
    json_values,
    mutated_bytes,
    mutated_value,
)
from tests.fuzz.profiles import PROFILE
from tests.support.bureau_receiver import Bureau, start_bureau
from tests.support.reports import FACTORY

KEY = OKPKey.generate_key("Ed25519")  # enrolled at the test bureau
KID = thumbprint(public_jwk(KEY))
TOPIC = report_topic(FACTORY)
TOKENS = corpus_bytes("report", ".jws")
PAYLOADS = corpus_bytes("report", ".json")
PARSED = [json.loads(p) for p in PAYLOADS]


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8", errors="surrogatepass")


def _signed(payload: bytes) -> bytes:
    return sign_compact(payload, KEY, Kind.REPORT).encode()


def _signed_with_header(header: Any, payload: bytes) -> bytes:
    """A token whose protected header is `header` (anything), signed with the enrolled key."""
    signing_input = _b64(_json(header)) + b"." + _b64(payload)
    return signing_input + b"." + _b64(KEY.private_key.sign(signing_input))


_HEADER = {"alg": "EdDSA", "kid": KID, "typ": Kind.REPORT.value}

messages = st.one_of(
    st.sampled_from(TOKENS).flatmap(mutated_bytes),
    st.sampled_from(PAYLOADS).map(_signed).flatmap(mutated_bytes),
    st.sampled_from(PARSED).flatmap(mutated_value).map(_json).map(_signed),
    st.sampled_from(PAYLOADS).flatmap(duplicate_member).map(_signed),
    st.sampled_from(PAYLOADS).flatmap(mutated_bytes).map(_signed),
    st.tuples(mutated_value(_HEADER), st.sampled_from(PAYLOADS)).map(
        lambda pair: _signed_with_header(*pair)
    ),
    st.binary(max_size=4096),
)


@pytest.fixture(scope="module")
def bureau(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bureau]:
    folder: Path = tmp_path_factory.mktemp("z1-report")
    made = start_bureau(folder / "bureau.db", None, {FACTORY: KEY})
    yield made
    made.receiver.stop()


@PROFILE
@given(message=messages)
def test_Z1_report_jws_only_declared_errors(bureau: Bureau, message: bytes) -> None:
    """If a report message is broken in any of the ways above, then the bureau answers it
    (or ignores it) without raising, within 1 s and 256 MB."""
    with traced():
        reply = within_memory(lambda: bureau.receiver.handle(TOPIC, message))
    assert reply is None or reply[0].endswith("/receipt")
    assert bureau.receiver.metrics["internal_errors_total"] == 0


@PROFILE
@given(message=messages)
def test_Z1_envelope_parsing_raises_only_envelope_errors(message: bytes) -> None:
    """If a compact JWS is broken, then every parsing function of the wire contract raises
    EnvelopeError and nothing else."""
    jwk = public_jwk(KEY)
    with traced():
        for parse in (
            lambda: peek_compact(message, Kind.REPORT),
            lambda: unverified_payload(message, Kind.REPORT),
            lambda: payload_sha256(message),
            lambda: verify_compact(message, Kind.REPORT, jwk),
            lambda: strict_loads(message),
        ):
            with contextlib.suppress(EnvelopeError):
                within_memory(parse)


rotation_statements = st.one_of(
    json_values.map(_json),
    st.builds(
        lambda payload, signatures: {"payload": payload, "signatures": signatures},
        st.one_of(st.sampled_from(PAYLOADS).map(lambda p: _b64(p).decode()), json_values),
        st.lists(
            st.fixed_dictionaries(
                {"protected": st.sampled_from((_b64(_json(_HEADER)).decode(), "e30", "")),
                 "signature": st.text(max_size=90)}
            ) | json_values,
            max_size=3,
        ) | json_values,
    ).flatmap(mutated_value).map(_json),
    st.binary(max_size=2048),
)


@PROFILE
@given(statement=rotation_statements)
def test_Z1_key_rotation_statement_only_declared_errors(bureau: Bureau, statement: bytes) -> None:
    """If a key-rotation message is malformed, then the bureau refuses it without raising, and
    `verify_general` (its envelope) raises EnvelopeError and nothing else."""
    with traced():
        within_memory(lambda: bureau.receiver.handle(rotation_topic(FACTORY), statement))
        # ValueError: json.loads, the test's own parse of the statement
        with contextlib.suppress(EnvelopeError, ValueError):
            within_memory(
                lambda: verify_general(json.loads(statement), Kind.KEYROTATE, [public_jwk(KEY)])
            )
    assert bureau.receiver.metrics["internal_errors_total"] == 0
    assert bureau.receiver.metrics["keys_rotated_total"] == 0
