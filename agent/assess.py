"""One place that turns a period of base measures into indicators and a tier evaluation.

Used by `tieragent evaluate`, by report building and by the demo, so that they all apply
the same policy, benchmarks, declarations and parameters.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from agent.config import FactoryConfig
from indicators.catalog import Params
from indicators.evaluate import Evaluation, evaluate
from indicators.policy import Policy, PolicySet


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
    loaded: PolicySet,
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
