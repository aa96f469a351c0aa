"""One place that turns a period of base measures into indicators and a tier evaluation.

Used by `tieragent evaluate`, by report building and by the demo, so that they all apply
the same policy, benchmarks, declarations and parameters.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from agent.config import FactoryConfig
from agent.errors import AgentError
from agent.protocol.report import has_samples
from indicators.catalog import Params
from indicators.evaluate import Evaluation, evaluate, tier_outcome
from indicators.policy import Policy, PolicySet

# The reason every condition of a period without any sample carries.
NO_DATA_REASON = "no_data_in_period"


class ForeignDeclarations(AgentError):
    """A declarations file made for another factory."""


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
    """The tier evaluation of `base`. A period without any received sample says so: coverage
    0 and every condition insufficient_data (`NO_DATA_REASON`), so no tier is reached."""
    own = config.factory.factory_id
    if loaded.declarations is not None and loaded.declarations.factory_id != own:
        raise ForeignDeclarations(
            f"{loaded.files.declarations}: these declarations are factory "
            f"{loaded.declarations.factory_id!r}'s, not {own!r}'s: give this factory's own "
            "--declarations (or none: declared conditions are then not_declared)."
        )
    with_data = has_samples(base)
    evaluation = evaluate(
        base,
        inventory,
        loaded.policy,
        benchmarks=loaded.benchmarks,
        declarations=loaded.declarations,
        params=params_for(config, loaded.policy),
        baseline_base=baseline_base,
        coverage=coverage if with_data else 0.0,
    )
    return evaluation if with_data else without_data(evaluation, loaded.policy)


def without_data(evaluation: Evaluation, policy: Policy) -> Evaluation:
    """`evaluation` of a period without data: every condition insufficient_data."""
    conditions = tuple(
        replace(c, status="insufficient_data", reason=NO_DATA_REASON)
        for c in evaluation.conditions
    )
    reached, next_tier, gaps = tier_outcome(policy, conditions)
    return replace(
        evaluation, conditions=conditions, tier_reached=reached, next_tier=next_tier, gaps=gaps,
        coverage=0.0,
    )
