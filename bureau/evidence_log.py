"""The transparency log in an evidence folder (docs/reliability.md §b.9).

`log/head.jws` is the log's signed tree head at export (signed with the key that seals the
folder); `log/proofs.json` has, for every report file of the folder (year, chain and
baseline roles), its leaf index and inclusion proof in that head, the receipt the bureau
stored for it (with the head it gave out then), and the consistency proof from that
receipt's head to the folder's head.

`verify` checks each report's inclusion in the folder's head, each receipt's signature, its
head and the report's inclusion there, and that the folder's head extends every receipt's
head. A report removed or changed at the bureau after some receipt was given out breaks the
last check for every receipt given out after the removed leaf: the folder alone catches it.
It does not catch a bureau that also signed its stored receipts again, nor the removal of
the factory's last report when no later receipt of the factory is in the folder; the agents,
which keep their receipts and the heads they saw, do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from joserfc.jwk import OKPKey

from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    payload_sha256,
    thumbprint,
    unverified_payload,
    verify_compact,
)
from agent.protocol.merkle import verify_inclusion
from agent.protocol.translog import (
    LogHead,
    LogProofError,
    check_receipt_log,
    consistent,
    hashes,
    hex_list,
    report_leaf,
    verify_head,
)
from bureau.store import SqliteReportStore
from bureau.translog import LogError, TransparencyLog

HEAD_NAME = "log/head.jws"
PROOFS_NAME = "log/proofs.json"


class _Writer(Protocol):
    def text(self, name: str, text: str) -> str: ...


def write_log(
    store: SqliteReportStore, key: OKPKey, reports: Iterable[tuple[str, str]], writer: _Writer
) -> None:
    """Write the log files for the `(report_id, payload_sha256)` of the folder's report
    files. Stored reports without a leaf (stored before the log existed, and no receiver
    has run since) get theirs first, as a receiver does when it starts."""
    reports = list(reports)
    first = store.get(reports[0][0]) if reports else None
    bureau_id = str(first.payload().get("aud")) if first else ""  # == the receiver's id
    translog = TransparencyLog(store.db, bureau_id, key)
    with store.transaction():
        translog.backfill(time.time())
    size = len(translog.tree())
    if size == 0:
        raise LogError("The bureau's transparency log is empty although reports are stored.")
    entries = []
    for report_id, sha in reports:
        leaf = translog.leaf(report_id, sha)
        stored = store.get(report_id)
        receipt = stored.receipt_jws if stored is not None else None
        entry: dict[str, Any] = {"report_id": report_id, "payload_sha256": sha,
                                 "leaf_index": None, "inclusion": None, "receipt": receipt,
                                 "receipt_link": None}
        if leaf is not None:
            entry["leaf_index"] = leaf.index
            entry["inclusion"] = hex_list(translog.inclusion(leaf.index, size))
        member = unverified_payload(receipt, Kind.RECEIPT).get("log") if receipt else None
        if isinstance(member, dict):
            given = int(unverified_payload(member["head"], Kind.LOG_HEAD)["tree_size"])
            # A head larger than the log's own has no proof: verify says it is not extended.
            entry["receipt_link"] = (hex_list(translog.consistency(given, size))
                                     if given <= size else [])
        entries.append(entry)
    writer.text(HEAD_NAME, translog.head(size) + "\n")
    writer.text(PROOFS_NAME, json.dumps({"entries": entries}, indent=2, sort_keys=True) + "\n")


class _Report(Protocol):
    @property
    def report_id(self) -> str | None: ...
    @property
    def jws(self) -> str | None: ...
    @property
    def state(self) -> str: ...


def check_log(
    path: Path, reports: Sequence[_Report], keys: Sequence[Mapping[str, Any]],
    problems: list[str], notes: list[str],
) -> None:
    """Check the folder's log files against its report files; `keys`: the bureau's public
    JWK(s) (the pinned ones, else the folder's own)."""
    if not (path / HEAD_NAME).exists() and not (path / PROOFS_NAME).exists():
        problems.append(f"{HEAD_NAME}: missing; the folder does not carry the bureau's "
                        "transparency log, so nothing shows that the bureau kept every report.")
        return
    pinned = {thumbprint(dict(k)): dict(k) for k in keys}
    try:
        head = verify_head((path / HEAD_NAME).read_text(encoding="ascii").strip(), pinned)
        proofs = json.loads((path / PROOFS_NAME).read_text(encoding="utf-8"))["entries"]
        by_id = {str(e["report_id"]): e for e in proofs}
    except (OSError, ValueError, KeyError, TypeError, LogProofError) as error:
        problems.append(f"log/: the log head or proofs cannot be read ({error}).")
        return
    checked = 0
    for report in reports:
        if report.jws is None or report.report_id is None or report.state == "rejected":
            continue
        entry = by_id.get(report.report_id)
        if entry is None:
            problems.append(f"{PROOFS_NAME}: report {report.report_id} has no log proof.")
            continue
        try:
            _check_entry(report.report_id, payload_sha256(report.jws), entry, head, pinned)
            checked += 1
        except (LogProofError, EnvelopeError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{PROOFS_NAME}: report {report.report_id}: {error}")
    notes.append(f"Transparency log: {checked} report(s) in the bureau's signed head of size "
                 f"{head.tree_size} ({head.timestamp}), and that head extends every receipt's.")


def _check_entry(
    report_id: str, sha: str, entry: Mapping[str, Any], head: LogHead,
    keys: Mapping[str, dict[str, Any]],
) -> None:
    if entry.get("payload_sha256") != sha:
        raise LogProofError("its proof is for other report bytes.")
    index = entry.get("leaf_index")
    if not isinstance(index, int) or not verify_inclusion(
        report_leaf(sha), index, head.tree_size, hashes(entry.get("inclusion"), "inclusion proof"),
        head.root_hash,
    ):
        raise LogProofError(f"it is not in the log's head ({head.describe()}): the bureau's log "
                            "does not hold this report where it says.")
    receipt = entry.get("receipt")
    if not isinstance(receipt, str):
        raise LogProofError("the bureau's receipt for it is missing.")
    value = None
    for jwk in keys.values():
        try:
            value = verify_compact(receipt, Kind.RECEIPT, jwk).payload
            break
        except EnvelopeError:
            continue
    if not isinstance(value, dict) or (value.get("report_id"), value.get("report_sha256")) != (
        report_id, sha
    ):
        raise LogProofError("its receipt is not a receipt of the bureau's key for it.")
    if value.get("log") is None:
        return  # stored before the log existed: nothing older to compare with
    given = check_receipt_log(value["log"], sha, keys)
    link = hashes(entry.get("receipt_link"), "receipt link")
    if not consistent(given.head, head, link):
        raise LogProofError(
            f"the log's head ({head.describe()}) does not extend the head in its receipt "
            f"({given.head.describe()}): the bureau's log lost or changed reports after "
            "that receipt was given out."
        )


def folder_keys(path: Path, pinned: Sequence[Mapping[str, Any]] | None, name: str) -> list[
    dict[str, Any]
]:
    """The bureau key(s) heads and receipts must verify with: the pinned ones, else the
    folder's own `name` file (none when it cannot be read: every check then fails)."""
    if pinned:
        return [dict(k) for k in pinned]
    try:
        return [json.loads((path / name).read_text(encoding="utf-8"))]
    except (OSError, ValueError):
        return []
