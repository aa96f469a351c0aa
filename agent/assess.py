"""One place that turns a period of base measures into indicators and a tier evaluation.

Used by `tieragent evaluate`, by report building and by the demo, so that they all apply
the same policy, benchmarks, declarations and parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from agent.config import FactoryConfig
from indicators.evaluate import Evaluation, evaluate
from indicators.kpi import Params
from indicators.policy import (
    Benchmarks,
    Declarations,
    Policy,
    load_benchmarks,
    load_declarations,
    load_policy,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DEFAULT_POLICY = CONFIG_DIR / "policies" / "default-2026.yaml"
DEFAULT_BENCHMARKS = CONFIG_DIR / "benchmarks" / "example-2026.yaml"
DEFAULT_DECLARATIONS = CONFIG_DIR / "declarations.example.yaml"


@dataclass(frozen=True)
class PolicyFiles:
    policy: Path = DEFAULT_POLICY
    benchmarks: Path | None = DEFAULT_BENCHMARKS
    declarations: Path | None = DEFAULT_DECLARATIONS


@dataclass(frozen=True)
class LoadedPolicy:
    files: PolicyFiles
    policy: Policy
    benchmarks: Benchmarks | None
    declarations: Declarations | None


def load_policy_files(files: PolicyFiles) -> LoadedPolicy:
    """Raises indicators.policy.PolicyFileError naming file and key."""
    return LoadedPolicy(
        files=files,
        policy=load_policy(files.policy),
        benchmarks=load_benchmarks(files.benchmarks) if files.benchmarks else None,
        declarations=load_declarations(files.declarations) if files.declarations else None,
    )


def params_for(config: FactoryConfig, policy: Policy) -> Params:
    base = replace(
        Params(),
        realtime_bound_s=config.collection.realtime_bound_s,
        industry_type=config.factory.industry_type,
        time_zone=config.factory.time_zone,
        industry_code=config.factory.industry_code,
        province=config.factory.province,
    )
    return policy.params_over(base)


def assess(
    config: FactoryConfig,
    base: pd.DataFrame,
    inventory: pd.DataFrame,
    loaded: LoadedPolicy,
    *,
    baseline_base: pd.DataFrame | None = None,
    coverage: float | None = None,
) -> Evaluation:
    return evaluate(
        base,
        inventory,
        loaded.policy,
        benchmarks=loaded.benchmarks,
        declarations=loaded.declarations,
        params=params_for(config, loaded.policy),
        baseline_base=baseline_base,
        coverage=coverage,
    )
