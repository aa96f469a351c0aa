"""The bureau's seal on an evidence folder (issue 17 item 2): the manifest and the factory's
key view are signed by the bureau; `verify` checks every report's key against the sealed view,
prints the key ids and windows, and names any tampering with keys/, keys.json or the manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from annual_scenario import BUREAU_KEY
from joserfc.jwk import OKPKey
from simdata import FACTORY
from typer import Typer
from typer.testing import CliRunner

from agent.protocol.envelope import (
    Kind,
    canonical_bytes,
    public_jwk,
    sign_compact,
    unverified_payload,
)
from bureau.evidence_export import manifest_bytes
from bureau.evidence_seal import BUREAU_KEY_NAME, SEAL_NAME, seal
from bureau.evidence_verify import verify_evidence_dir
from bureau.receipts import bureau_public
from tieragent.commands.bureau_annual import register


def _copy(evidence: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(evidence, target)
    return target


def _forge_report(folder: Path, attacker: OKPKey) -> tuple[str, dict[str, Any]]:
    """Re-sign one day's report with a key the bureau never enrolled, drop that key into
    keys/ and keys.json, and re-hash the manifest as an attacker would."""
    target = sorted((folder / "reports").iterdir())[3]
    payload = unverified_payload(target.read_text().strip(), Kind.REPORT)
    kid = attacker.thumbprint()
    forged = {**payload, "kid": kid}
    target.write_text(sign_compact(canonical_bytes(forged), attacker, Kind.REPORT))
    jwk = public_jwk(attacker)
    (folder / "keys" / f"{kid}.jwk.json").write_text(json.dumps(jwk, indent=2, sort_keys=True))
    listed = json.loads((folder / "keys.json").read_text())
    listed.append({"kid": kid, "factory_id": FACTORY, "status": "active"})
    (folder / "keys.json").write_text(json.dumps(listed))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["keys"].append({"kid": kid, "jwk": jwk, "status": "active"})
    manifest["files"] = {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in [*sorted(manifest["files"]), f"keys/{kid}.jwk.json"]
    }
    (folder / "manifest.json").write_bytes(manifest_bytes(manifest))
    return kid, manifest


def test_untouched_folder_verifies_with_the_pinned_key_and_names_its_keys(
    evidence: Path, tmp_path: Path
) -> None:
    """If the folder is untouched, then `verify-evidence --bureau-key` passes and prints the
    bureau key that sealed it and each factory key with its window (ids were never printed)."""
    pinned = tmp_path / "bureau.jwk"
    pinned.write_text(json.dumps(bureau_public(BUREAU_KEY)))
    app = Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["verify-evidence", str(evidence), "--bureau-key", str(pinned)])
    assert result.exit_code == 0, result.output
    factory_kids = [k["kid"] for k in json.loads((evidence / "keys.json").read_text())]
    assert factory_kids and all(f"Factory key {kid}: active, seq 1..(open)" in result.output
                                for kid in factory_kids)
    assert f"Sealed by bureau key {BUREAU_KEY.thumbprint()}" in result.output
    assert "not pinned" not in result.output


def test_a_report_signed_by_a_key_never_enrolled_is_named(evidence: Path, tmp_path: Path) -> None:
    """If a report is re-signed by a key the bureau never enrolled, with that key added to keys/,
    keys.json and the manifest and every hash redone, then verify fails naming the key (before:
    it passed, since keys/ was trusted and the manifest was not signed)."""
    folder = _copy(evidence, tmp_path)
    kid, _ = _forge_report(folder, OKPKey.generate_key("Ed25519"))
    for pinned in (None, [bureau_public(BUREAU_KEY)]):
        problems = verify_evidence_dir(folder, pinned).problems
        assert any(kid in p and "never enrolled" in p for p in problems), problems
        assert any(p.startswith(f"keys/{kid}.jwk.json: key {kid} is not in the bureau's sealed")
                   for p in problems)
        assert "manifest.json: its key list differs from the one the bureau sealed." in problems
        assert any(p.startswith("manifest.json: not the manifest the bureau sealed")
                   for p in problems)


def test_a_seal_by_another_key_fails_against_the_pinned_bureau_key(
    evidence: Path, tmp_path: Path
) -> None:
    """If the attacker also re-seals the folder with a key of its own and replaces
    bureau.jwk.json, then verify with the pinned bureau key names the foreign seal; without a
    pinned key, verify says that the seal proves integrity only."""
    folder = _copy(evidence, tmp_path)
    _, manifest = _forge_report(folder, OKPKey.generate_key("Ed25519"))
    fake_bureau = OKPKey.generate_key("Ed25519")
    raw = (folder / "manifest.json").read_bytes()
    (folder / SEAL_NAME).write_text(seal(raw, FACTORY, 2025, manifest["keys"], fake_bureau))
    (folder / BUREAU_KEY_NAME).write_text(json.dumps(public_jwk(fake_bureau)))
    manifest["files"][BUREAU_KEY_NAME] = hashlib.sha256(
        (folder / BUREAU_KEY_NAME).read_bytes()).hexdigest()
    raw = manifest_bytes(manifest)
    (folder / "manifest.json").write_bytes(raw)
    (folder / SEAL_NAME).write_text(seal(raw, FACTORY, 2025, manifest["keys"], fake_bureau))
    pinned = verify_evidence_dir(folder, [bureau_public(BUREAU_KEY)])
    assert any(p.startswith(f"{SEAL_NAME}: sealed by bureau key {fake_bureau.thumbprint()}, "
                            "which is not the pinned") for p in pinned.problems), pinned.problems
    unpinned = verify_evidence_dir(folder)
    assert any("Bureau key not pinned" in note and "integrity only" in note
               for note in unpinned.notes)


def test_an_unsealed_folder_fails(evidence: Path, tmp_path: Path) -> None:
    """If manifest.jws is removed, then verify says the folder is not sealed."""
    folder = _copy(evidence, tmp_path)
    (folder / SEAL_NAME).unlink()
    problems = verify_evidence_dir(folder).problems
    assert f"{SEAL_NAME}: missing; the folder is not sealed by the bureau." in problems
