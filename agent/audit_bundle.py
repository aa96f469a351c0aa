"""Evidence bundles: signed reports plus the raw-data segments behind them, and their check.

Layout of a bundle directory:
    manifest.json                      {"format", "factory_id", "reports": [...], "keys": [...],
                                        "chain": {"first_seq", "last_seq"}}
    keys/<kid>.jwk.json                public keys that signed the reports
    reports/<seq:06d>-<report_id>.jws  the report JWS, byte for byte as sent
    receipts/<report_id>.jws           bureau receipt, when known
    raw/<report_id>/index.json         [{device_id, signal_id, hour_start, file, leaf}],
                                       in leaf order (hour_start: the segment's span start)
    raw/<report_id>/<n:06d>.seg        one segment's bytes under the report's segmenting rule:
                                       for the current rule its sealed bytes as stored
                                       (agent.protocol.segment_codec), for the first rule the
                                       bytes recomputed (agent.protocol.merkle.segment_bytes)

Each entry of `reports` has a `role`: "period" for the reports exported (with their raw
segments), "chain" for the other reports of the factory's chain between them. One chain
carries every report kind (day, month, year) and revision, so a bundle of one period's
reports holds a contiguous slice of it only with the reports signed in between; the manifest's
`chain` names that slice, and every seq in it must be in the bundle.

Raw segments come from a callback (`segments_for(report) -> Iterable[SealedSegment |
Segment]`) that the caller wires to its store (agent.reporter.segments_of_report: the sealed
segments, never the live samples), so this module does no storage I/O of its own.
agent.sample_proof proves a single sample from a bundle.

`verify_bundle` checks signatures, the hash chain (every seq from the first to the last, each
linking its predecessor), the Merkle root of each period report against its raw segments
(naming the segments whose bytes changed) and the indicators recomputed from the base
measures, and returns every problem as a sentence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.protocol.chain import ChainEntry, walk_chain
from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    peek_compact,
    sha256_hex,
    thumbprint,
    unverified_payload,
    verify_compact,
)
from agent.protocol.merkle import Segment, leaf_hash, root, segment_bytes
from agent.protocol.report import (
    IndicatorFn,
    indicator_mismatches,
    recompute_indicators,
)
from agent.protocol.segment_codec import SealedSegment

FORMAT = "tieragent-evidence/v1"
PERIOD, CHAIN = "period", "chain"  # the role of a report in the bundle
SegmentsFor = Callable[[Mapping[str, Any]], Iterable[Segment | SealedSegment]]


@dataclass(frozen=True, slots=True)
class BundleReport:
    jws: str
    receipt_jws: str | None = None


@dataclass
class VerifyResult:
    reports: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def export_bundle(
    out: Path,
    reports: Iterable[BundleReport],
    public_keys: Iterable[Mapping[str, str]],
    segments_for: SegmentsFor | None,
    *,
    chain: Iterable[BundleReport] = (),
) -> Path:
    """Write a bundle into `out` (created; must be empty or absent). Returns the manifest path.

    `reports` are the exported reports, with their raw segments; `chain` the other reports
    of the factory's chain between their seqs (any kind or revision, no raw segments), so
    that the bundle's chain is contiguous."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise FileExistsError(f"{out}: the bundle directory is not empty.")
    keys = []
    for jwk in public_keys:
        clean = {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"]}
        kid = thumbprint(clean)
        _write(out / "keys" / f"{kid}.jwk.json", json.dumps(clean, indent=2).encode())
        keys.append(kid)
    entries = []
    factory_id = None
    roles = [(item, PERIOD) for item in reports] + [(item, CHAIN) for item in chain]
    for item, role in roles:
        report = unverified_payload(item.jws, Kind.REPORT)
        factory_id = report["factory_id"]
        name = f"{int(report['seq']):06d}-{report['report_id']}.jws"
        _write(out / "reports" / name, item.jws.encode("ascii"))
        if item.receipt_jws:
            _write(out / "receipts" / f"{report['report_id']}.jws", item.receipt_jws.encode())
        segment_count = 0
        if segments_for is not None and role == PERIOD:
            index = []
            for n, (segment, data) in enumerate(stored_bytes(segments_for(report))):
                seg_file = f"{n:06d}.seg"
                _write(out / "raw" / report["report_id"] / seg_file, data)
                index.append(
                    {
                        "device_id": segment.device_id,
                        "signal_id": segment.signal_id,
                        "hour_start": segment.hour_start,
                        "file": seg_file,
                        "leaf": leaf_hash(data).hex(),
                    }
                )
            _write(
                out / "raw" / report["report_id"] / "index.json",
                json.dumps(index, indent=1).encode(),
            )
            segment_count = len(index)
        entries.append(
            {
                "file": f"reports/{name}",
                "role": role,
                "report_id": report["report_id"],
                "seq": report["seq"],
                "period": report["period"],
                "revision": report.get("revision", 0),
                "raw_segments": (
                    segment_count if segments_for is not None and role == PERIOD else None
                ),
            }
        )
    entries.sort(key=lambda e: int(e["seq"]))
    seqs = [int(e["seq"]) for e in entries]
    manifest = {
        "format": FORMAT,
        "factory_id": factory_id,
        "reports": entries,
        "keys": keys,
        "chain": {"first_seq": min(seqs), "last_seq": max(seqs)} if seqs else None,
    }
    path = out / "manifest.json"
    _write(path, json.dumps(manifest, indent=2).encode())
    return path


def stored_bytes(
    segments: Iterable[Segment | SealedSegment],
) -> list[tuple[Segment | SealedSegment, bytes]]:
    """Each segment with the bytes its leaf hashes, in leaf order."""
    pairs = [
        (segment, segment.data if isinstance(segment, SealedSegment) else segment_bytes(segment))
        for segment in segments
    ]
    pairs.sort(key=lambda pair: pair[0].order_key)
    return pairs


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _load_keys(bundle: Path) -> dict[str, dict[str, Any]]:
    keys: dict[str, dict[str, Any]] = {}
    for file in sorted((bundle / "keys").glob("*.jwk.json")):
        jwk = json.loads(file.read_text())
        keys[thumbprint(jwk)] = jwk
    return keys


def verify_bundle(
    bundle: Path,
    *,
    trusted_keys: Mapping[str, Mapping[str, Any]] | None = None,
    indicator_fn: IndicatorFn | None = None,
) -> VerifyResult:
    """Check a bundle; every problem is one sentence naming the report and what failed.

    `trusted_keys` (kid -> JWK) pins the keys to trust; by default the bundle's own keys
    are used, which proves integrity and consistency but not who signed.
    """
    result = VerifyResult()
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        result.problems.append(f"{bundle}: manifest.json is missing or unreadable ({error}).")
        return result
    keys = dict(trusted_keys) if trusted_keys is not None else _load_keys(bundle)
    chain: list[ChainEntry] = []
    labels: list[str] = []
    for entry in manifest.get("reports", []):
        label = _label(entry)
        try:
            token = (bundle / entry["file"]).read_text().strip()
            header, _ = peek_compact(token, Kind.REPORT)
            jwk = keys.get(header["kid"])
            if jwk is None:
                result.problems.append(f"{label}: signed by unknown key {header['kid']}.")
                continue
            verified = verify_compact(token, Kind.REPORT, dict(jwk))
        except (OSError, KeyError) as error:
            result.problems.append(f"{label}: report file unreadable ({error}).")
            continue
        except EnvelopeError as error:
            result.problems.append(f"{label}: signature or format check failed: {error}")
            continue
        report = verified.payload
        result.reports += 1
        chain.append(ChainEntry(report["seq"], verified.payload_sha256, report["prev_sha256"]))
        labels.append(label)
        if entry.get("role", PERIOD) == PERIOD:
            _check_raw(bundle, report, label, result)
        try:
            mismatched = indicator_mismatches(
                report["indicators"], recompute_indicators(report, indicator_fn)
            )
        except Exception as error:  # recomputation failing is itself a finding
            result.problems.append(f"{label}: indicators cannot be recomputed ({error}).")
        else:
            if mismatched:
                result.problems.append(
                    f"{label}: indicators differ from the base measures: {', '.join(mismatched)}."
                )
    links = walk_chain(chain, manifest.get("factory_id"))
    for link in links:
        label = labels[link.index]
        if link.from_genesis is False:
            result.problems.append(f"{label}: does not start from the genesis hash.")
        elif link.previous_seq == link.seq:
            result.problems.append(f"{label}: a second report of seq {link.seq} (a fork).")
        elif link.previous_seq is not None and not link.follows:
            missing = _seqs(link.previous_seq + 1, link.seq - 1)
            result.problems.append(
                f"{label}: chain gap after seq {link.previous_seq} ({missing} not in the "
                "bundle)."
            )
        elif link.previous_seq is not None and not link.linked:
            result.problems.append(f"{label}: prev_sha256 does not match seq {link.previous_seq}.")
    _check_ends(manifest.get("chain"), [link.seq for link in links], result)
    return result


def _label(entry: Mapping[str, Any]) -> str:
    period = entry.get("period") or {}
    revision = f" revision {entry['revision']}" if entry.get("revision") else ""
    return f"report seq {entry.get('seq')} ({period.get('key', '?')}{revision})"


def _seqs(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


def _check_ends(declared: Any, seqs: list[int], result: VerifyResult) -> None:
    """The manifest's chain slice (seq first..last) must be in the bundle from end to end
    (the walk names the holes in between)."""
    if not isinstance(declared, Mapping):
        return
    first, last = declared.get("first_seq"), declared.get("last_seq")
    if not isinstance(first, int) or not isinstance(last, int):
        result.problems.append("manifest.json: the chain slice is not two sequence numbers.")
        return
    if not seqs:
        result.problems.append(f"manifest.json: no verified report of {_seqs(first, last)}.")
        return
    where = f"the manifest declares seq {first}..{last}"
    if min(seqs) > first:
        result.problems.append(
            f"chain: {_seqs(first, min(seqs) - 1)} not in the bundle ({where})."
        )
    if max(seqs) < last:
        result.problems.append(f"chain: {_seqs(max(seqs) + 1, last)} not in the bundle ({where}).")
    outside = sorted(s for s in seqs if s < first or s > last)
    if outside:
        result.problems.append(
            f"chain: seq {', '.join(map(str, outside))} outside the slice {where}."
        )


def _check_raw(bundle: Path, report: Mapping[str, Any], label: str, result: VerifyResult) -> None:
    raw_dir = bundle / "raw" / str(report["report_id"])
    expected = report["raw_data"]
    if not raw_dir.exists():
        result.problems.append(f"{label}: no raw segments in the bundle; Merkle root unchecked.")
        return
    try:
        index = json.loads((raw_dir / "index.json").read_text())
    except (OSError, ValueError):
        result.problems.append(f"{label}: raw/index.json is missing or unreadable.")
        return
    leaves: list[bytes] = []
    changed: list[str] = []
    for item in index:
        name = f"{item['device_id']}/{item['signal_id']}/{item['hour_start']}"
        try:
            data = (raw_dir / item["file"]).read_bytes()
        except OSError:
            result.problems.append(f"{label}: raw segment {name} is missing.")
            continue
        leaf = leaf_hash(data)
        if leaf.hex() != item.get("leaf"):
            changed.append(name)
        leaves.append(leaf)
    result.segments += len(leaves)
    if len(leaves) != expected["segment_count"]:
        result.problems.append(
            f"{label}: {len(leaves)} raw segments, the report declares {expected['segment_count']}."
        )
    if root(leaves).hex() != expected["merkle_root"]:
        where = f" (changed: {', '.join(changed)})" if changed else ""
        result.problems.append(f"{label}: raw-data Merkle root does not match{where}.")


def segment_sha256(segment: Segment) -> str:
    """SHA-256 of a segment's canonical bytes (for logs and listings)."""
    return sha256_hex(segment_bytes(segment))
