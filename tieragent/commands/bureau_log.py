"""`tieragent bureau log`: the bureau's transparency log (bureau/translog.py).

tieragent bureau log --db bureau.db [--factory F] [--report REPORT_ID] [--json]

Prints the signed tree head the receiver signed last and whether the stored leaves still
make that tree; with `--factory`, that factory's leaves and its latest head (from the
receipt of its last stored report); with `--report`, the report's leaf and its inclusion
proof in the current head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from agent.protocol.envelope import Kind, unverified_payload
from agent.protocol.translog import hex_list
from bureau.store import SqlReportStore
from bureau.translog import LogError, TransparencyLog
from tieragent.commands.bureau_store import DATABASE_URL_OPTION, DB_OPTION, open_store
from tieragent.console import InvalidInput, handle_errors


def _receipt_head(store: SqlReportStore, report_id: str) -> str | None:
    """The log head in the stored receipt of a report (None: not stored, or no log)."""
    stored = store.get(report_id)
    if stored is None:
        return None
    member = unverified_payload(stored.receipt_jws, Kind.RECEIPT).get("log")
    return str(member["head"]) if isinstance(member, dict) else None


def log_state(
    store: SqlReportStore, factory: str | None, report: str | None
) -> dict[str, Any]:
    """What `bureau log` prints, as one JSON-able dict; InvalidInput for an unknown
    report or a report of another factory."""
    translog = TransparencyLog(store.db, "")
    try:
        tree = translog.tree()
    except LogError as error:
        raise InvalidInput(f"{store.name}: {error}") from None
    latest = translog.latest_head()
    result: dict[str, Any] = {"db": store.name, "leaves": len(tree), "head": None}
    if latest is not None:
        size, root, jws = latest
        result["head"] = {
            "tree_size": size,
            "root_hash": root,
            "timestamp": unverified_payload(jws, Kind.LOG_HEAD).get("timestamp"),
            "sth": jws,
            "matches_leaves": size == len(tree) and tree.root(size).hex() == root,
        }
    if factory is not None:
        leaves = translog.factory_leaves(factory)
        last = leaves[-1] if leaves else None
        result["factory"] = {
            "factory_id": factory,
            "leaves": len(leaves),
            "last_leaf_index": last.index if last else None,
            "head": _receipt_head(store, last.report_id) if last else None,
        }
    if report is not None:
        leaf = translog.leaf(report)
        if leaf is None or (factory is not None and leaf.factory_id != factory):
            where = f" of factory {factory}" if factory else ""
            raise InvalidInput(f"Report {report}{where} has no leaf in the log of {store.name}.")
        size = latest[0] if latest is not None and latest[0] > leaf.index else len(tree)
        result["report"] = {
            "report_id": report,
            "factory_id": leaf.factory_id,
            "payload_sha256": leaf.payload_sha256,
            "leaf_index": leaf.index,
            "tree_size": size,
            "inclusion": hex_list(translog.inclusion(leaf.index, size)),
            "receipt_head": _receipt_head(store, report),
        }
    return result


@handle_errors
def log_command(
    db: Path | None = DB_OPTION,
    database_url: str | None = DATABASE_URL_OPTION,
    factory: str | None = typer.Option(None, "--factory", help="Also this factory's leaves."),
    report: str | None = typer.Option(None, "--report", help="Inclusion proof of this report."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
) -> None:
    """Show the transparency log's signed head; a factory's leaves; a report's proof."""
    store = open_store(db, database_url)
    try:
        state = log_state(store, factory, report)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(state, indent=2))
        return
    head = state["head"]
    if head is None:
        typer.echo(f"{state['db']}: the log has {state['leaves']} leaves and no signed head yet.")
    else:
        typer.echo(f"Signed tree head: size {head['tree_size']}, root {head['root_hash']}, "
                   f"{head['timestamp']}")
        typer.echo(head["sth"])
        if not head["matches_leaves"]:
            typer.echo(f"WARNING: the {state['leaves']} stored leaves do not make this head: "
                       "the log was changed after it was signed.")
    if "factory" in state:
        fact = state["factory"]
        typer.echo(f"Factory {fact['factory_id']}: {fact['leaves']} leaves, the last at index "
                   f"{fact['last_leaf_index']}; its latest head: {fact['head'] or '—'}")
    if "report" in state:
        item = state["report"]
        typer.echo(f"Report {item['report_id']} ({item['factory_id']}): leaf {item['leaf_index']}"
                   f" of {item['tree_size']}, payload SHA-256 {item['payload_sha256']}")
        typer.echo("Inclusion proof: " + (" ".join(item["inclusion"]) or "(none: one leaf)"))


def register(bureau_app: typer.Typer) -> None:
    """Add `log` to the `tieragent bureau` app."""
    bureau_app.command("log")(log_command)
