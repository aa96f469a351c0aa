"""`tieragent evidence prove`: one raw sample of an audit bundle, decoded from its sealed
segment, with the segment's inclusion proof under the signed report's Merkle root.

tieragent evidence prove BUNDLE --report REPORT_ID --device D --signal S --at EPOCH_S
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agent.sample_proof import prove_sample
from tieragent.console import EXIT_FAILED, handle_errors


@handle_errors
def evidence_prove(
    bundle: Path = typer.Argument(..., help="Audit bundle directory (tieragent evidence export)."),
    report_id: str = typer.Option(..., "--report", help="The report whose raw data to prove."),
    device: str = typer.Option(..., "--device", help="Device id."),
    signal: str = typer.Option(..., "--signal", help="Signal id."),
    at: float = typer.Option(..., "--at", help="The sample's source time, epoch seconds."),
    tolerance_s: float = typer.Option(0.0005, "--tolerance-s", help="Match within this."),
) -> None:
    """Prove one raw sample: print it (JSON, one line per match) with the inclusion proof of
    its segment; exit 1 unless every proof verifies against the signed report."""
    proofs = prove_sample(bundle, report_id, device, signal, at, tolerance_s=tolerance_s)
    for proof in proofs:
        typer.echo(json.dumps(proof.to_json(), sort_keys=True))
    if not all(proof.verified for proof in proofs):
        raise typer.Exit(EXIT_FAILED)


def register(evidence_app: typer.Typer) -> None:
    evidence_app.command("prove")(evidence_prove)
