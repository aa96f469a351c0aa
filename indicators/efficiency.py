"""ISO 22400-2 efficiency indicators (docs/indicators.md §2) from the totals of a period's base
measures.

Availability, performance, quality, OEE and the other time and quantity ratios, each a ratio of
sums. Time-based values are withheld as insufficient_data when too much of the planned time has no
data; quantity-based ones as count_mismatch when the counters disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

from indicators.catalog import (
    COUNT_MISMATCH,
    INDICATORS,
    INSUFFICIENT_DATA,
    NO_FAILURES,
    NO_IDEAL_CYCLE_TIME,
    NO_PLANNED_TIME,
    NO_PRODUCTION,
    IndicatorValue,
    Params,
    defined,
    undefined,
)


def efficiency(t: Mapping[str, float], params: Params) -> list[IndicatorValue]:
    pbt, apt, asut, adet, unk = t["pbt_s"], t["apt_s"], t["asut_s"], t["adet_s"], t["unk_s"]
    produced, good, scrap, rework = t["produced"], t["good"], t["scrap"], t["rework"]
    unknown_share = unk / pbt if pbt > 0 else None
    time_withheld = unknown_share is not None and unknown_share > params.max_unknown_share
    # GQ counts reworked-then-good units too (docs/indicators.md FPY = (GQ - RQ) / PQ), so the
    # counters agree when GQ + SQ = PQ and RQ <= GQ.
    mismatch = produced > 0 and (
        abs(good + scrap - produced) > params.count_tolerance * produced or rework > good
    )
    out: list[IndicatorValue] = []

    def ratio(
        key: str,
        numerator: float,
        denominator: float,
        inputs: dict[str, float],
        reason_if_zero: str,
        *,
        quality: bool = False,
        flags: tuple[str, ...] = (),
    ) -> IndicatorValue:
        if denominator <= 0:
            return undefined(key, reason_if_zero, inputs)
        value = numerator / denominator
        if quality and mismatch:
            return undefined(key, COUNT_MISMATCH, inputs, measured=value)
        if INDICATORS[key].time_based and time_withheld:
            return undefined(key, INSUFFICIENT_DATA, inputs, measured=value)
        return defined(key, value, inputs, flags)

    out.append(
        ratio("availability", apt, pbt, {"apt_s": apt, "pbt_s": pbt, "unk_s": unk}, NO_PLANNED_TIME)
    )
    out.append(
        ratio(
            "availability_known",
            apt,
            pbt - unk,
            {"apt_s": apt, "pbt_s": pbt, "unk_s": unk},
            NO_PLANNED_TIME if pbt <= 0 else INSUFFICIENT_DATA,
        )
    )
    out.append(ratio("unknown_share", unk, pbt, {"unk_s": unk, "pbt_s": pbt}, NO_PLANNED_TIME))
    performance = _performance(t, params)
    out.append(performance)
    quality = ratio(
        "quality_ratio",
        good,
        produced,
        {"good": good, "produced": produced, "scrap": scrap, "rework": rework},
        NO_PRODUCTION,
        quality=True,
    )
    out.append(quality)
    out.append(_oee(t, out[0], performance, quality, mismatch, time_withheld))
    out.append(
        ratio(
            "technical_efficiency",
            apt,
            apt + adet,
            {"apt_s": apt, "adet_s": adet},
            NO_PLANNED_TIME,
        )
    )
    out.append(ratio("setup_rate", asut, apt + asut, {"asut_s": asut, "apt_s": apt}, NO_PRODUCTION))
    out.append(
        ratio(
            "utilisation",
            apt,
            apt + asut + adet,
            {"apt_s": apt, "asut_s": asut, "adet_s": adet},
            NO_PLANNED_TIME,
        )
    )
    failures, stops = t["failures"], t["unplanned_stops"]
    out.append(
        ratio(
            "mtbf",
            apt + asut,
            failures,
            {"apt_s": apt, "asut_s": asut, "failures": failures},
            NO_FAILURES,
        )
    )
    out.append(ratio("mttr", adet, stops, {"adet_s": adet, "unplanned_stops": stops}, NO_FAILURES))
    quantity_inputs = {"scrap": scrap, "produced": produced, "good": good, "rework": rework}
    out.append(ratio("defect_rate", scrap, produced, quantity_inputs, NO_PRODUCTION, quality=True))
    out.append(
        ratio(
            "first_pass_yield",
            good - rework,
            produced,
            quantity_inputs,
            NO_PRODUCTION,
            quality=True,
            flags=("proxy_without_serialisation",),
        )
    )
    out.append(
        ratio("throughput", good, pbt / 3600.0, {"good": good, "pbt_s": pbt}, NO_PLANNED_TIME)
    )
    energy = t["energy_kwh"]
    for key, units, name in (
        ("energy_per_unit", produced, "produced"),
        ("energy_per_good_unit", good, "good"),
    ):
        inputs = {"energy_kwh": energy, name: units}
        if units > 0 and energy <= 0:
            # Production without a single kWh means no meter, not free production.
            out.append(undefined(key, INSUFFICIENT_DATA, inputs, flags=("no_energy_data",)))
        else:
            out.append(ratio(key, energy, units, inputs, NO_PRODUCTION))
    return out


def _performance(t: Mapping[str, float], params: Params) -> IndicatorValue:
    ideal, apt, produced = t["ideal_time_s"], t["apt_s"], t["produced"]
    inputs = {"ideal_time_s": ideal, "apt_s": apt, "produced": produced}
    if apt <= 0:
        return undefined("performance", NO_PRODUCTION, inputs)
    if produced > 0 and ideal <= 0:
        return undefined("performance", NO_IDEAL_CYCLE_TIME, inputs)
    value = ideal / apt
    # ISO 22400-2 allows > 1; it points at a wrong ideal cycle time, so flag it, never cap it.
    flags = ("above_one",) if value > params.performance_flag_above else ()
    if value > 1.0 and not flags:
        flags = ("above_one_within_tolerance",)
    return defined("performance", value, inputs, flags)


def _oee(
    t: Mapping[str, float],
    availability: IndicatorValue,
    performance: IndicatorValue,
    quality: IndicatorValue,
    mismatch: bool,
    time_withheld: bool,
) -> IndicatorValue:
    inputs = {
        "apt_s": t["apt_s"],
        "pbt_s": t["pbt_s"],
        "unk_s": t["unk_s"],
        "ideal_time_s": t["ideal_time_s"],
        "produced": t["produced"],
        "good": t["good"],
    }
    factors = (availability, performance, quality)
    numbers = [f.value if f.value is not None else f.measured for f in factors]
    for factor, number in zip(factors, numbers, strict=True):
        if number is None:
            return undefined("oee", factor.reason or INSUFFICIENT_DATA, inputs)
    a, p, q = (float(n) for n in numbers if n is not None)
    value = a * p * q
    if mismatch:
        return undefined("oee", COUNT_MISMATCH, inputs, measured=value)
    if time_withheld:
        return undefined("oee", INSUFFICIENT_DATA, inputs, measured=value)
    return defined("oee", value, inputs, performance.flags)
