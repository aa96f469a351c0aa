"""The data files the code reads ship inside the packages; `config/` holds the same bytes.

Users read and copy the files under `config/`; an installed wheel has no `config/`, so the
code reads its own copies with importlib.resources. If one side is edited and not the other,
this test names the pair.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (user-facing copy under the checkout, package, path inside the package)
COPIES = [
    ("config/schemas/report.schema.json", "agent.protocol", "data/report.schema.json"),
    ("config/schemas/config.schema.json", "agent", "data/config.schema.json"),
    ("config/policies/default-2026.yaml", "indicators", "data/policies/default-2026.yaml"),
    ("config/benchmarks/example-2026.yaml", "indicators", "data/benchmarks/example-2026.yaml"),
    ("config/declarations.example.yaml", "indicators", "data/declarations.example.yaml"),
    ("config/factories/demo.yaml", "tieragent", "data/factories/demo.yaml"),
    ("config/demo-agent.yaml", "tieragent", "data/demo-agent.yaml"),
]


@pytest.mark.parametrize(("user_copy", "package", "inside"), COPIES)
def test_packaged_copy_is_identical(user_copy: str, package: str, inside: str) -> None:
    packaged = files(package).joinpath(inside).read_bytes()
    assert packaged == (ROOT / user_copy).read_bytes(), (
        f"{user_copy} and {package}/{inside} differ; copy the edited one over the other"
    )


def test_every_packaged_data_file_has_a_user_copy() -> None:
    listed = {(package, inside) for _, package, inside in COPIES}
    for package in ("agent", "indicators", "tieragent"):
        root = ROOT / package.replace(".", "/")
        for data in root.rglob("data/**/*"):
            if data.is_file():
                parts = data.relative_to(ROOT).parts
                owner = ".".join(parts[: parts.index("data")])
                inside = "/".join(parts[parts.index("data"):])
                assert (owner, inside) in listed, f"{data.relative_to(ROOT)} has no copy in config/"
