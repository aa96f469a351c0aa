"""Tier policy, industry benchmarks and declarations: versioned YAML files and their models.

The only I/O in `indicators/`: reading these three files. A malformed file raises
`PolicyFileError` whose text lists every problem as `file: key: message`. The default tier
policy and the example benchmarks and declarations ship in `indicators/data/` (the copies
under `config/` are the same files, for users to read and copy).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from indicators.catalog import INDICATORS, Params
from indicators.vocabulary import TIER_ORDER, TierId

Comparator = Literal[">=", "<=", ">", "<"]
Level = Literal["device", "key_processes", "line", "factory"]
_BENCHMARK_REF = re.compile(r"^(province|national|international)\.(avg|p75)$")
_PARAM_NAMES = frozenset(f.name for f in fields(Params))


_DATA = files("indicators") / "data"
DEFAULT_POLICY = Path(str(_DATA / "policies" / "default-2026.yaml"))
EXAMPLE_BENCHMARKS = Path(str(_DATA / "benchmarks" / "example-2026.yaml"))  # not statistics
EXAMPLE_DECLARATIONS = Path(str(_DATA / "declarations.example.yaml"))  # another factory's


class PolicyFileError(Exception):
    """A policy, benchmark or declarations file that cannot be used; str() lists the problems."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- policy --------------------------------------------------------------------------------------


class BenchmarkRef(_Strict):
    """`province.avg`, `province.p75`, `national.p75`, ... for the factory's industry code."""

    benchmark: str

    @field_validator("benchmark")
    @classmethod
    def _known(cls, value: str) -> str:
        if not _BENCHMARK_REF.match(value):
            raise ValueError("write <province|national|international>.<avg|p75>, e.g. province.avg")
        return value

    @property
    def scope(self) -> str:
        return self.benchmark.split(".")[0]

    @property
    def statistic(self) -> str:
        return self.benchmark.split(".")[1]


class Condition(_Strict):
    """One tier condition: measured (`indicator`) or declared (`declared`), never both."""

    id: str
    label_zh: str
    label_en: str
    indicator: str | None = None
    declared: str | None = None
    level: Level = "factory"
    comparator: Comparator | None = None
    threshold: float | BenchmarkRef | None = None
    # Informative conditions are evaluated and shown but do not decide the tier.
    required: bool = True
    policy_default: bool = Field(
        True, description="The threshold is a policy default, not a number from the regulation."
    )
    citation: str = Field(..., min_length=1)
    note: str = ""

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        if (self.indicator is None) == (self.declared is None):
            raise ValueError("give exactly one of `indicator` (measured) or `declared`")
        if self.indicator is not None:
            if self.indicator not in INDICATORS:
                known = ", ".join(sorted(INDICATORS))
                raise ValueError(f"unknown indicator {self.indicator!r}; known: {known}")
            if self.comparator is None or self.threshold is None:
                raise ValueError("a measured condition needs `comparator` and `threshold`")
        if self.declared is not None:
            if isinstance(self.threshold, BenchmarkRef):
                raise ValueError("a declared condition cannot compare against a benchmark")
            if (self.comparator is None) != (self.threshold is None):
                raise ValueError(
                    "a declared condition gives both `comparator` and `threshold`, or neither "
                    "(then the declared value must be true)"
                )
        return self


class Tier(_Strict):
    id: TierId
    name_zh: str
    citation: str
    conditions: tuple[Condition, ...]


class Coverage(_Strict):
    """Minimum share of the period's days with data; below it measured conditions are
    insufficient_data (the measured value is still shown)."""

    min_day_share: float = Field(0.9, ge=0.0, le=1.0)
    citation: str = ""


class Policy(_Strict):
    policy_id: str = Field(..., min_length=1)
    version: str = Field(..., min_length=1)
    title: str = ""
    status: str = Field(
        ..., description="e.g. policy_default: thresholds are not regulation numbers"
    )
    definition: str = "iso22400-2:2014+a1:2017"
    params: dict[str, float | str] = Field(default_factory=dict)
    coverage: Coverage = Coverage()
    tiers: tuple[Tier, ...]

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        unknown = sorted(set(value) - _PARAM_NAMES)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(_PARAM_NAMES)}")
        return value

    @model_validator(mode="after")
    def _order(self) -> Policy:
        ids = [tier.id for tier in self.tiers]
        if ids != [t for t in TIER_ORDER if t in ids] or len(set(ids)) != len(ids):
            raise ValueError(f"tiers must appear once each, in the order {list(TIER_ORDER)}")
        seen: set[str] = set()
        for tier in self.tiers:
            for condition in tier.conditions:
                if condition.id in seen:
                    raise ValueError(f"duplicate condition id {condition.id!r}")
                seen.add(condition.id)
        return self

    def params_over(self, params: Params) -> Params:
        """`params` with this policy's overrides applied (the policy is the authority)."""
        from dataclasses import replace

        overrides: dict[str, Any] = dict(self.params)
        return replace(params, **overrides)


# --- benchmarks ----------------------------------------------------------------------------------


class BenchmarkValue(_Strict):
    """`p75` is the leading-quartile boundary in the better direction (for a lower-is-better
    indicator it is the value that 75 % of factories do worse than)."""

    better: Literal["higher", "lower"]
    avg: float | None = None
    p75: float | None = None


class IndustryBenchmarks(_Strict):
    name: str = ""
    national: dict[str, BenchmarkValue] = Field(default_factory=dict)
    international: dict[str, BenchmarkValue] = Field(default_factory=dict)
    provinces: dict[str, dict[str, BenchmarkValue]] = Field(default_factory=dict)


class Benchmarks(_Strict):
    benchmark_id: str
    version: str
    example: bool = Field(..., description="true: illustrative numbers, not real statistics")
    note: str = ""
    source: str = ""
    industries: dict[str, IndustryBenchmarks] = Field(default_factory=dict)

    def lookup(
        self, industry_code: str, province: str, indicator: str, scope: str
    ) -> BenchmarkValue | None:
        industry = self.industries.get(industry_code)
        if industry is None:
            return None
        if scope == "province":
            # Province keys are matched case-insensitively ("Tianjin" in a config, "tianjin" here).
            by_name = {name.casefold(): values for name, values in industry.provinces.items()}
            return by_name.get(province.casefold(), {}).get(indicator)
        table = industry.national if scope == "national" else industry.international
        return table.get(indicator)


# --- declarations --------------------------------------------------------------------------------


class DocumentRef(_Strict):
    title: str
    reference: str = Field(..., description="document number, archive id or URL")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    date: str | None = None


class Declaration(_Strict):
    value: bool | int | float | str | list[str]
    documents: tuple[DocumentRef, ...] = ()
    note: str = ""


class BaselineDeclaration(_Strict):
    period: str
    documents: tuple[DocumentRef, ...] = ()


class Declarations(_Strict):
    schema_: Literal["tieragent/declarations/v1"] = Field(
        "tieragent/declarations/v1", alias="schema"
    )
    factory_id: str
    declared_by: str
    declared_at: str
    baseline: BaselineDeclaration | None = None
    items: dict[str, Declaration] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- loading -------------------------------------------------------------------------------------

_Model = TypeVar("_Model", bound=BaseModel)


def _load(path: Path | str, model: type[_Model]) -> _Model:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:  # found by fuzzing (Z1), like the two below
        raise PolicyFileError(path, [f"not UTF-8 text: {exc}"]) from None
    try:
        data = yaml.load(text, Loader=yaml.CSafeLoader)  # libyaml: the same documents, faster
    except yaml.YAMLError as exc:
        raise PolicyFileError(path, [f"not valid YAML: {exc}"]) from None
    # PyYAML's own limits, not YAMLErrors: its recursive parser on deep nesting, values it
    # cannot construct (2001-13-45, an integer of 5,000 digits, `!!timestamp x`).
    except RecursionError:
        raise PolicyFileError(path, ["not valid YAML: nested too deeply"]) from None
    except (ValueError, AttributeError) as exc:
        raise PolicyFileError(path, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise PolicyFileError(path, ["the file must hold a mapping at the top level"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise PolicyFileError(path, problems) from None


def load_policy(path: Path | str) -> Policy:
    return _load(path, Policy)


def load_benchmarks(path: Path | str) -> Benchmarks:
    return _load(path, Benchmarks)


def load_declarations(path: Path | str) -> Declarations:
    return _load(path, Declarations)


def file_sha256(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes: how reports and evaluations name the files they used."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class PolicySet:
    """A tier policy with the benchmarks and declarations evaluated against it."""

    files: PolicyFiles
    policy: Policy
    benchmarks: Benchmarks | None
    declarations: Declarations | None


@dataclass(frozen=True)
class PolicyFiles:
    """The policy, benchmark and declarations files an evaluation depends on."""

    policy: Path = DEFAULT_POLICY
    benchmarks: Path | None = None
    declarations: Path | None = None

    def load(self) -> PolicySet:
        """Raises PolicyFileError naming the file and every problem."""
        return PolicySet(
            files=self,
            policy=_cached(self.policy, load_policy),
            benchmarks=_cached(self.benchmarks, load_benchmarks) if self.benchmarks else None,
            declarations=(
                _cached(self.declarations, load_declarations) if self.declarations else None
            ),
        )

    def digests(self) -> dict[str, str | None]:
        def digest(path: Path | None) -> str | None:
            return None if path is None else file_sha256(path)

        return {
            "policy_sha256": digest(self.policy),
            "benchmarks_sha256": digest(self.benchmarks),
            "declarations_sha256": digest(self.declarations),
        }


def _cached(path: Path, loader: Any) -> Any:
    try:
        stat = path.stat()
    except OSError as exc:
        raise PolicyFileError(path, [f"cannot read: {exc.strerror or exc}"]) from None
    return _load_file(str(path), loader, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _load_file(path: str, loader: Any, _mtime_ns: int, _size: int) -> Any:
    """Parsed policy files (frozen models), reused while the file is unchanged: evaluating many
    factories must not parse the same YAML for each."""
    return loader(path)
