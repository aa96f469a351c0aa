"""The indicator catalog: ids, units and labels, the value type, the reasons a value is undefined,
and the parameters the indicators depend on (docs/indicators.md §2–3, §5).

Every computing module builds its values through `defined` and `undefined`, so a value's unit
always comes from the catalog.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFINITION = "iso22400-2:2014+a1:2017"

# Reasons a value is undefined.
NO_PLANNED_TIME = "no_planned_time"
NO_PRODUCTION = "no_production"
NO_FAILURES = "no_failures"
NO_INVENTORY = "no_inventory"
INSUFFICIENT_DATA = "insufficient_data"
NO_BASELINE = "no_baseline"
COUNT_MISMATCH = "count_mismatch"
NO_IDEAL_CYCLE_TIME = "no_ideal_cycle_time"


@dataclass(frozen=True)
class Params:
    """Bounds the indicators depend on (policy values; the policy file may override them)."""

    realtime_bound_s: float = 5.0  # informative here: the store applies it when counting on-time
    networked_completeness: float = 0.95
    max_unknown_share: float = 0.05
    industry_type: str = "discrete"
    time_zone: str = "Asia/Shanghai"
    count_tolerance: float = 0.0  # |GQ + SQ + RQ - PQ| / PQ allowed before count_mismatch
    min_auto_share: float = 0.01  # auto APT / APT for a device-day to count as run in auto mode
    performance_flag_above: float = 1.05
    industry_code: str = ""  # GB/T 4754, picks the benchmark row
    province: str = ""


@dataclass(frozen=True)
class IndicatorValue:
    """One indicator: `value` is None exactly when `reason` says why.

    `measured` carries the computed number when the value is withheld as insufficient_data, so
    the report can show it beside the reason.
    """

    id: str
    value: float | None
    reason: str | None
    inputs: dict[str, float]
    unit: str
    flags: tuple[str, ...] = ()
    measured: float | None = None

    def to_json(self) -> dict[str, Any]:
        # `_finite` inlined for the inputs: the bureau writes ≈130 of them per report checked.
        isfinite = math.isfinite
        return {
            "id": self.id,
            "value": _finite(self.value),
            "reason": self.reason,
            "inputs": {
                k: v if v is not None and isfinite(v) else None
                for k, v in sorted(self.inputs.items())
            },
            "unit": self.unit,
            "flags": list(self.flags),
            "measured": _finite(self.measured),
        }


@dataclass(frozen=True)
class IndicatorInfo:
    unit: str
    label_zh: str
    label_en: str
    time_based: bool = False  # withheld as insufficient_data when the unknown share is too high
    higher_is_better: bool = True


INDICATORS: dict[str, IndicatorInfo] = {
    "availability": IndicatorInfo("ratio", "时间开动率", "Availability (APT/PBT)", True),
    "availability_known": IndicatorInfo(
        "ratio", "时间开动率（已知时间）", "Availability over known time", True
    ),
    "unknown_share": IndicatorInfo("ratio", "无数据时间占比", "Unknown-time share", False, False),
    "performance": IndicatorInfo("ratio", "性能开动率", "Performance (effectiveness)"),
    "quality_ratio": IndicatorInfo("ratio", "合格品率", "Quality ratio"),
    "oee": IndicatorInfo("ratio", "设备综合效率", "OEE", True),
    "technical_efficiency": IndicatorInfo("ratio", "技术效率", "Technical efficiency", True),
    "setup_rate": IndicatorInfo("ratio", "换型时间比", "Setup rate", True, False),
    "utilisation": IndicatorInfo("ratio", "利用效率", "Utilisation efficiency (APT/AUBT)", True),
    "mtbf": IndicatorInfo("s", "平均故障间隔时间", "MTBF", True),
    "mttr": IndicatorInfo("s", "平均修复时间", "MTTR", True, False),
    "defect_rate": IndicatorInfo("ratio", "不良品率", "Defect (scrap) rate", False, False),
    "first_pass_yield": IndicatorInfo("ratio", "一次合格率", "First pass yield (proxy)"),
    "throughput": IndicatorInfo("units_per_h", "产出率", "Good units per planned hour", True),
    "energy_per_unit": IndicatorInfo(
        "kwh_per_unit", "单位产品能耗", "Energy per unit", False, False
    ),
    "energy_per_good_unit": IndicatorInfo(
        "kwh_per_unit", "单位合格品能耗", "Energy per good unit", False, False
    ),
    "digitization_rate": IndicatorInfo("ratio", "生产设备数字化率", "Digitization rate"),
    "networking_rate": IndicatorInfo("ratio", "生产设备联网率", "Networking rate"),
    "networking_rate_digital": IndicatorInfo(
        "ratio", "数字化生产设备联网率", "Networking rate of digital devices"
    ),
    "key_process_cnc_rate": IndicatorInfo("ratio", "关键工序数控化率", "Key-process CNC rate"),
    "key_process_cnc_rate_device": IndicatorInfo(
        "ratio", "关键工序数控化率（按设备）", "Key-process CNC rate, device-based"
    ),
    "key_process_cnc_rate_process": IndicatorInfo(
        "ratio", "关键工序数控化率（按工序）", "Key-process CNC rate, process-based"
    ),
    "key_process_cnc_rate_measured": IndicatorInfo(
        "ratio", "关键工序数控化率（实测）", "Key-process CNC rate, measured use"
    ),
    "key_process_auto_share": IndicatorInfo(
        "ratio", "关键工序自动运行率", "Auto-mode share of key-process running time"
    ),
    "data_collection_rate": IndicatorInfo("ratio", "数据自动采集率", "Data collection rate"),
    "realtime_rate": IndicatorInfo("ratio", "数据采集实时率", "Real-time rate"),
    "data_quality_rate": IndicatorInfo("ratio", "数据质量合格率", "Data quality rate"),
    "efficiency_gain": IndicatorInfo("ratio", "生产效率提升", "Production efficiency gain"),
    "defect_rate_change": IndicatorInfo(
        "ratio", "不良品率变化", "Defect rate change", False, False
    ),
    "energy_per_unit_change": IndicatorInfo(
        "ratio", "单位产品能耗变化", "Energy per unit change", False, False
    ),
    "energy_efficiency_gain": IndicatorInfo("ratio", "能源利用率提升", "Energy efficiency gain"),
}

BASELINE_INDICATORS: tuple[str, ...] = (
    "efficiency_gain",
    "defect_rate_change",
    "energy_per_unit_change",
    "energy_efficiency_gain",
)



def defined(
    key: str, value: float, inputs: dict[str, float], flags: Iterable[str] = ()
) -> IndicatorValue:
    return IndicatorValue(key, float(value), None, dict(inputs), INDICATORS[key].unit, tuple(flags))


def undefined(
    key: str,
    reason: str,
    inputs: dict[str, float],
    *,
    measured: float | None = None,
    flags: Iterable[str] = (),
) -> IndicatorValue:
    return IndicatorValue(
        key, None, reason, dict(inputs), INDICATORS[key].unit, tuple(flags), measured
    )


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value
