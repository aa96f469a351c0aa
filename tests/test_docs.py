"""The documentation: it builds, its configuration examples load, its reference is current.

(a) `mkdocs build --strict` succeeds: a broken link or anchor between pages, or a page
    missing from the nav, fails it (mkdocs.yml turns those checks into warnings, and
    --strict makes warnings errors).
(b) Every fenced ```yaml block in docs/ is a configuration the agent loads, by one rule:
    - a block with top-level `factory:` and `devices:` is a whole configuration and must pass
      `agent.config.parse_config` as it is;
    - any other block is a fragment of one: its top-level sections are put over a minimal
      valid configuration (`connections` and `state_maps` entries are added to the minimal
      one's, any other section replaces it), and the result must pass `parse_config`;
    - a block that is not a configuration at all (a declarations file, a unit file's YAML)
      is marked by the line `<!-- not-config -->` right before its fence, and is only
      checked to be valid YAML.
    Relative paths are fine: `parse_config` does not open the files a configuration names.
(c) docs/configuration.md is exactly what docs/gen_config_reference.py writes from the
    current config schema.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from agent.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOT_CONFIG = "<!-- not-config -->"
FENCE = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

MINIMAL: dict[str, Any] = {
    "factory": {"enterprise_id": "91120116MA0000000X", "factory_id": "docs-001",
                "industry_code": "C3484"},
    "connections": {"docs-opcua": {"protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"}},
    "devices": [{
        "id": "DOCS-01", "line": "L1", "process_step": "machining", "kind": "cnc",
        "digital": True, "connection": "docs-opcua",
        "signals": [{"id": "state", "role": "state", "state_map": "packml",
                     "opcua": {"node": "ns=2;s=Docs/state"}}],
    }],
}


def _blocks() -> list[tuple[str, str, bool]]:
    """(where, text, is_config) for every ```yaml block of every page."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1), before != NOT_CONFIG))
    return found


BLOCKS = _blocks()


def _wrapped(fragment: dict[str, Any]) -> dict[str, Any]:
    config = {key: value for key, value in MINIMAL.items()}
    for key, value in fragment.items():
        if key in ("connections", "state_maps") and isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


def test_docs_have_config_examples() -> None:
    whole = [where for where, text, is_config in BLOCKS
             if is_config and {"factory", "devices"} <= set(yaml.safe_load(text) or {})]
    assert any(where.startswith("docs/configuration.md") for where in whole), whole
    assert len(BLOCKS) >= 5, BLOCKS


@pytest.mark.parametrize(("where", "text", "is_config"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_yaml_block_loads(where: str, text: str, is_config: bool) -> None:
    raw = yaml.safe_load(text)
    if not is_config:
        return
    assert isinstance(raw, dict), f"{where}: a configuration block must be a YAML mapping"
    config = raw if {"factory", "devices"} <= set(raw) else _wrapped(raw)
    try:
        parse_config(config, where)
    except ConfigError as error:
        pytest.fail(f"{where}: the documented configuration does not load:\n{error}")


def test_example_file_loads() -> None:
    """The example users copy loads as a file, the way `check-config` reads it."""
    config = load_config(DOCS / "examples" / "agent.yaml")
    assert config.reporting is not None and config.delivery is not None
    assert config.delivery.bureau_key == DOCS / "examples" / "bureau-receipt-key.json"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference",
                                                  DOCS / "gen_config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_current() -> None:
    generator = _generator()
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == generator.generate(), (
        f"docs/configuration.md is out of date with the config schema; regenerate it with: "
        f"{generator.REGENERATE}"
    )


def test_reference_lists_every_key() -> None:
    """Every key of every section of the schema appears in the reference's tables."""
    from agent.config import json_schema

    schema = json_schema()
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    bodies = [schema, *(b for b in schema["$defs"].values() if "properties" in b)]
    for body in bodies:
        for key in body["properties"]:
            assert f"| `{key}` |" in page, key


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    assert (tmp_path / "site" / "getting-started.zh" / "index.html").is_file()
