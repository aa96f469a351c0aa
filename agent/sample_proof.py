"""Proof of one raw sample from an audit bundle (agent.audit_bundle).

A sealed segment (agent.protocol.segment_codec) holds many samples, and the signed report
commits to it by one Merkle leaf. To prove a single sample: decode the segment and show the
sample, give the segment's RFC 9162 inclusion proof under the report's `raw_data.merkle_root`,
and check that root against the report's signature. Anyone holding the segment's bytes, the
proof and the signed report can repeat the check (`check_sample_proof`); nothing else of the
bundle is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.protocol.envelope import EnvelopeError, Kind, peek_compact, thumbprint, verify_compact
from agent.protocol.merkle import inclusion_proof, leaf_hash, root, verify_inclusion
from agent.protocol.segment_codec import CodecError, decode_segment
from indicators.vocabulary import QUALITY_NAMES


class ProofError(AgentError):
    """The sample cannot be proven from the bundle; str() says why."""

    exit_code = 1  # a failed check, as `tieragent verify` exits


@dataclass(frozen=True)
class SampleProof:
    report_id: str
    merkle_root: str  # hex, from the signed report
    segment_file: str  # raw/<report_id>/<file>
    leaf_index: int
    tree_size: int
    path: list[str]  # hex sibling hashes, RFC 9162 §2.1.3
    device_id: str
    signal_id: str
    span: tuple[int, int]
    position: int  # the sample's place in its segment
    source_ts: float
    received_ts: float
    value: Any
    quality: int
    keyed_by_receive_time: bool
    verified: bool

    def to_json(self) -> dict[str, Any]:
        value = self.value
        shown: Any = value if _json_exact(value) else repr(value)
        return {
            "report_id": self.report_id, "merkle_root": self.merkle_root,
            "segment": {"file": self.segment_file, "device_id": self.device_id,
                        "signal_id": self.signal_id, "span": list(self.span),
                        "leaf_index": self.leaf_index, "tree_size": self.tree_size},
            "inclusion_proof": self.path,
            "sample": {"position": self.position, "source_ts": self.source_ts,
                       "received_ts": self.received_ts, "value": shown,
                       "value_type": type(value).__name__,
                       "quality": QUALITY_NAMES.get(self.quality, str(self.quality)),
                       "keyed_by_receive_time": self.keyed_by_receive_time},
            "verified": self.verified,
        }


def _json_exact(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= 2**53
    return value is None or isinstance(value, str)


def check_sample_proof(
    segment: bytes, leaf_index: int, tree_size: int, path: list[bytes], merkle_root: bytes
) -> bool:
    """The segment's bytes are leaf `leaf_index` of the tree with `merkle_root`."""
    return verify_inclusion(leaf_hash(segment), leaf_index, tree_size, path, merkle_root)


def _signed_report(
    bundle: Path, report_id: str, trusted_keys: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest.get("reports", []):
        if entry.get("report_id") != report_id:
            continue
        token = (bundle / entry["file"]).read_text().strip()
        header, _ = peek_compact(token, Kind.REPORT)
        keys = dict(trusted_keys) if trusted_keys is not None else {
            thumbprint(jwk): jwk
            for jwk in (json.loads(p.read_text()) for p in (bundle / "keys").glob("*.jwk.json"))
        }
        if header["kid"] not in keys:
            raise ProofError(f"report {report_id} is signed by an unknown key {header['kid']}")
        try:
            return dict(verify_compact(token, Kind.REPORT, dict(keys[header["kid"]])).payload)
        except EnvelopeError as error:
            raise ProofError(
                f"report {report_id}: the signature does not verify ({error})") from None
    raise ProofError(f"no report {report_id} in {bundle}")


def prove_sample(
    bundle: Path, report_id: str, device_id: str, signal_id: str, source_ts: float, *,
    tolerance_s: float = 0.0005, trusted_keys: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[SampleProof]:
    """Every sample of `device_id`/`signal_id` in the report's raw segments whose source time
    is within `tolerance_s` of `source_ts`, each with its proof (ProofError if none)."""
    try:
        report = _signed_report(bundle, report_id, trusted_keys)
        raw_dir = bundle / "raw" / report_id
        index = json.loads((raw_dir / "index.json").read_text())
        blobs = [(raw_dir / item["file"]).read_bytes() for item in index]
    except (OSError, ValueError, KeyError) as error:
        raise ProofError(f"{bundle}: cannot read report {report_id} or its raw segments "
                         f"({error})") from None
    leaves = [leaf_hash(blob) for blob in blobs]
    expected = bytes.fromhex(report["raw_data"]["merkle_root"])
    whole = root(leaves) == expected and len(leaves) == report["raw_data"]["segment_count"]
    proofs: list[SampleProof] = []
    for at, (item, blob) in enumerate(zip(index, blobs, strict=True)):
        if item["device_id"] != device_id or item["signal_id"] != signal_id:
            continue
        try:
            segment = decode_segment(blob)
        except CodecError:
            continue  # a segment of the first rule (or damaged): it proves nothing here
        path = inclusion_proof(leaves, at)
        verified = whole and check_sample_proof(blob, at, len(leaves), path, expected)
        for position, ts in enumerate(segment.source_ts.tolist()):
            if abs(ts - source_ts) > tolerance_s:
                continue
            proofs.append(SampleProof(
                report_id=report_id, merkle_root=expected.hex(),
                segment_file=f"raw/{report_id}/{item['file']}", leaf_index=at,
                tree_size=len(leaves), path=[p.hex() for p in path], device_id=device_id,
                signal_id=signal_id, span=(segment.start, segment.end), position=position,
                source_ts=ts, received_ts=float(segment.received_ts[position]),
                value=segment.values[position], quality=int(segment.quality[position]),
                keyed_by_receive_time=bool(segment.rehomed[position]), verified=verified,
            ))
    if not proofs:
        raise ProofError(
            f"no sample of {device_id}/{signal_id} at source time {source_ts} in the sealed "
            f"segments of report {report_id}")
    return proofs
