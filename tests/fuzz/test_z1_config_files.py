"""Z1: fuzzing the YAML files an operator or an auditor hands the product
(docs/reliability.md §c): the factory configuration (YAML + pydantic, agent/config.py with
agent/service_config.py's sections) and the tier policy, declarations and benchmarks files
(indicators/policy.py). Declared errors: `ConfigError` from `load_config`/`parse_config`
(pydantic's ValidationError is wrapped into it), `PolicyFileError` from the policy loaders.

Inputs start from the corpus (tests/fuzz/corpus/{config,policy,declarations,benchmarks}/,
the shipped and example files): broken bytes, parsed and structurally mutated then dumped
again, one top-level member replaced, YAML's own hazards (deep nesting, huge integers,
impossible dates, anchors, tags, other encodings), random text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ConfigError, load_config, parse_config
from indicators.policy import (
    PolicyFileError,
    load_benchmarks,
    load_declarations,
    load_policy,
)
from tests.fuzz.limits import traced, within_memory
from tests.fuzz.mutations import (
    corpus_bytes,
    corpus_files,
    mutated_bytes,
    mutated_member,
    mutated_value,
)
from tests.fuzz.profiles import PROFILE

# The loaders parse with libyaml (yaml.CSafeLoader): the 1 s bound per input holds for the
# YAML targets as for the others (PyYAML's pure-Python parser took 1.3-3 s on deep nesting).
YAML_PROFILE = PROFILE

# Nested deeper than the parser allows: checked for the declared error on their own
# (test_Z1_deep_yaml_nesting_is_a_declared_error).
DEEP_YAML = (b"[" * 5000 + b"]" * 5000, b"a: " + b"{a: " * 3000 + b"1" + b"}" * 3000)
YAML_HAZARDS: tuple[bytes, ...] = (
    b"version: 1" + b"0" * 5000,
    b"day: 2001-13-45",
    b"a: &a [1, 2]\nb: *a\nc: *a\n",
    b"a: &a [1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b]\n",
    b"!!python/object/apply:os.system ['true']",
    b"a: !!binary AAAA",
    b"a: !!timestamp nope",
    b"? [a, b]\n: c\n",
    b"\xff\xfe" + "a: 1".encode("utf-16-le"),
    b"tiers: \xff\xfe",
    b"a: 1\x00",
    b"%YAML 9.9\n---\na: 1",
    b"a: .nan\nb: .inf\nc: -.inf",
    b"",
    b"---\n---\n",
)


def _parsed(target: str) -> list[Any]:
    """The seeds that are valid files (the `regression-` ones are not), parsed."""
    return [yaml.safe_load(p.read_bytes()) for p in corpus_files(target)
            if not p.name.startswith("regression-")]


def _texts(target: str) -> st.SearchStrategy[bytes]:
    seeds = corpus_bytes(target)
    parsed = _parsed(target)

    def dumped(value: Any) -> bytes:
        return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")

    return st.one_of(
        st.sampled_from(parsed).flatmap(mutated_member).map(dumped),
        st.sampled_from(parsed).flatmap(mutated_value).map(dumped),
        st.sampled_from(seeds).flatmap(mutated_bytes),
        st.sampled_from(YAML_HAZARDS),
        st.sampled_from(seeds + list(YAML_HAZARDS)).flatmap(mutated_bytes),
        st.text(max_size=500).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=500),
    )


def _only(load: Callable[[Path], Any], declared: type[Exception], path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with traced(), contextlib.suppress(declared):
        within_memory(lambda: load(path))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("z1-yaml") / "input.yaml"


@YAML_PROFILE
@given(data=_texts("config"))
def test_Z1_config_yaml_only_config_errors(scratch: Path, data: bytes) -> None:
    """If a configuration file is broken in any of the ways above, then `load_config` raises
    ConfigError and nothing else, within 256 MB (the 1 s bound: see YAML_PROFILE)."""
    _only(load_config, ConfigError, scratch, data)


@PROFILE
@given(value=st.sampled_from(_parsed("config")).flatmap(mutated_value))
def test_Z1_config_values_only_config_errors(value: Any) -> None:
    """If the parsed configuration holds anything YAML can, then `parse_config` raises
    ConfigError (pydantic's errors wrapped) and nothing else."""
    with traced(), contextlib.suppress(ConfigError):
        within_memory(lambda: parse_config(value))


POLICY_LOADERS = {
    "policy": load_policy,
    "declarations": load_declarations,
    "benchmarks": load_benchmarks,
}


@pytest.mark.parametrize("target", sorted(POLICY_LOADERS))
def test_Z1_policy_files_only_policy_file_errors(scratch: Path, target: str) -> None:
    """If a tier policy, declarations or benchmarks file is broken in any of the ways above,
    then its loader raises PolicyFileError and nothing else, within 256 MB (the 1 s bound:
    see YAML_PROFILE)."""

    @YAML_PROFILE
    @given(data=_texts(target))
    def load(data: bytes) -> None:
        _only(POLICY_LOADERS[target], PolicyFileError, scratch, data)

    load()


@pytest.mark.parametrize("data", DEEP_YAML, ids=["list", "mapping"])
def test_Z1_deep_yaml_nesting_is_a_declared_error(scratch: Path, data: bytes) -> None:
    """If a file nests deeper than the YAML parser allows (found by fuzzing: PyYAML's pure-
    Python parser raised RecursionError through both loaders; libyaml, used now, stops at
    1,000 levels), then the loaders raise their declared errors saying so."""
    scratch.write_bytes(data)
    too_deep = "nested too deeply|maximum nesting depth"
    with pytest.raises(ConfigError, match=too_deep):
        load_config(scratch)
    with pytest.raises(PolicyFileError, match=too_deep):
        load_policy(scratch)


@pytest.mark.parametrize("data", [b"day: 2001-13-45", b"a: !!timestamp nope", b"tiers: \xff\xfe",
                                  b"version: 1" + b"0" * 5000])
def test_Z1_yaml_values_pyyaml_cannot_build_are_declared_errors(scratch: Path, data: bytes) -> None:
    """If a file holds what PyYAML fails on outside its YAMLError (found by fuzzing:
    ValueError, AttributeError; UnicodeDecodeError in the policy loader), then the loaders
    raise their declared errors."""
    scratch.write_bytes(data)
    with pytest.raises(PolicyFileError):
        load_policy(scratch)
    if not data.startswith(b"tiers"):  # the configuration names the encoding problem itself
        with pytest.raises(ConfigError):
            load_config(scratch)
