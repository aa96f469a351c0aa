"""Writes the seed corpora of the fuzz tests (tests/fuzz/corpus/<target>/) from real produced
reports, receipts and configuration files; run again when a format changes:

    .venv/bin/python -m tests.fuzz.build_corpus

Reports and receipts are produced the way the product produces them (an outbox commits a
mixed chain of day, month, year and revision reports; a bureau receiver answers each), signed
by throwaway keys that are not kept: the tests sign the payloads again with their own keys.
Seeds kept because fuzzing found a crash live beside these as `regression-*` files and are
never overwritten here.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from joserfc.jwk import OKPKey

from agent.outbox import Outbox
from agent.protocol.envelope import Kind, peek_compact
from agent.protocol.mqtt import report_topic
from tests.fuzz.mutations import CORPUS
from tests.support.bureau_receiver import start_bureau
from tests.support.chain_reports import commit_mixed
from tests.support.reports import FACTORY

ROOT = Path(__file__).resolve().parents[2]
YAML_SEEDS = {
    "config": [
        "config/example-minimal.yaml", "config/demo-agent.yaml", "config/factories/demo.yaml",
        "docs/examples/agent.yaml", "tests/agent/data/agent.yaml",
    ],
    "policy": ["indicators/data/policies/default-2026.yaml"],
    "declarations": ["indicators/data/declarations.example.yaml"],
    "benchmarks": ["indicators/data/benchmarks/example-2026.yaml"],
}


def _write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _reports_and_receipts() -> None:
    folder = Path(tempfile.mkdtemp(prefix="tieragent-corpus-"))
    try:
        key = OKPKey.generate_key("Ed25519")
        bureau = start_bureau(folder / "bureau.db", None, {FACTORY: key})
        outbox = Outbox(folder / "outbox.db")
        items = commit_mixed(outbox, key, with_segments=True)
        handle = bureau.receiver.handle
        receipts: dict[str, str] = {}
        for item in items[:4] + items[5:]:  # seq 5 missing: seq 6 is held (pending)
            reply = handle(report_topic(FACTORY), item.jws.encode())
            assert reply is not None
            receipts.setdefault(f"seq{item.seq}", reply[1])
        reply = handle(report_topic(FACTORY), items[0].jws.encode())
        assert reply is not None
        receipts["duplicate"] = reply[1]
        reply = handle(report_topic(FACTORY), b"not a report")
        receipts["rejected"] = reply[1] if reply else receipts["seq1"]
        for item in items:
            name = f"{item.period_slot.replace('/', '-')}"
            _write("report", f"{name}.jws", item.jws.encode())
            _write("report", f"{name}.json", peek_compact(item.jws, Kind.REPORT)[1])
        for name, token in receipts.items():
            _write("receipt", f"{name}.jws", token.encode())
            _write("receipt", f"{name}.json", peek_compact(token, Kind.RECEIPT)[1])
        outbox.close()
        bureau.receiver.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    for target in ("report", "receipt", *YAML_SEEDS):
        for old in (CORPUS / target).glob("*") if (CORPUS / target).is_dir() else []:
            if not old.name.startswith("regression-"):
                old.unlink()
    _reports_and_receipts()
    for target, files in YAML_SEEDS.items():
        for file in files:
            _write(target, Path(file).name, (ROOT / file).read_bytes())


if __name__ == "__main__":
    main()
