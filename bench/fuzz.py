"""Coverage-guided fuzzing of the Z1 parsers with Atheris (docs/reliability.md §c Z1): the
nightly job, 10 minutes per target; not run in CI (tests/fuzz/ runs Hypothesis there).

    .venv/bin/pip install atheris        # optional; 3.0.0 installs on Python 3.11 here
    .venv/bin/python bench/fuzz.py report -max_total_time=600
    .venv/bin/python bench/fuzz.py config -max_total_time=600

Targets: report (bureau intake), receipt (envelope parsing of a receipt), config, policy,
declarations, benchmarks. Seeds: tests/fuzz/corpus/<target>/ (a copy is made, libFuzzer
adds what it finds there). An exception other than the target's declared errors ends the
run with the input saved as crash-<sha1>: keep it as a `regression-` seed with a test.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-not-found]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["agent", "indicators", "bureau", "connectors"]):
    from agent.config import ConfigError, load_config
    from agent.protocol.envelope import EnvelopeError, Kind, unverified_payload
    from agent.protocol.mqtt import report_topic
    from indicators.policy import (
        PolicyFileError,
        load_benchmarks,
        load_declarations,
        load_policy,
    )

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fuzz" / "corpus"
SCRATCH = Path(tempfile.mkdtemp(prefix="tieragent-atheris-")) / "input.yaml"


def _yaml(load: Callable[[Path], object], declared: type[Exception]) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        SCRATCH.write_bytes(data)
        with contextlib.suppress(declared):
            load(SCRATCH)
    return run


def _report() -> Callable[[bytes], None]:
    from joserfc.jwk import OKPKey

    from tests.support.bureau_receiver import start_bureau
    from tests.support.reports import FACTORY

    bureau = start_bureau(SCRATCH.parent / "bureau.db", None,
                          {FACTORY: OKPKey.generate_key("Ed25519")})
    topic = report_topic(FACTORY)
    return lambda data: bureau.receiver.handle(topic, data) and None


def _receipt(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        unverified_payload(data, Kind.RECEIPT)


TARGETS: dict[str, Callable[[], Callable[[bytes], None]]] = {
    "report": _report,
    "receipt": lambda: _receipt,
    "config": lambda: _yaml(load_config, ConfigError),
    "policy": lambda: _yaml(load_policy, PolicyFileError),
    "declarations": lambda: _yaml(load_declarations, PolicyFileError),
    "benchmarks": lambda: _yaml(load_benchmarks, PolicyFileError),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: bench/fuzz.py {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = sys.argv[1]
    seeds = SCRATCH.parent / "corpus"
    shutil.copytree(CORPUS / target, seeds)
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(seeds)], TARGETS[target]())
    atheris.Fuzz()


if __name__ == "__main__":
    main()
