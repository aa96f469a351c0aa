"""Per-device tallies of an ingested batch (for `IngestResult`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def per_device(
    names: npt.NDArray[Any], codes: npt.NDArray[np.intp], where: npt.NDArray[np.bool_] | None
) -> dict[str, int]:
    """Samples per device (only those `where` is true), devices with none left out."""
    counts = np.bincount(codes, weights=where, minlength=len(names)).astype(np.int64)
    return {name: int(n) for name, n in zip(names.tolist(), counts.tolist(), strict=True) if n}


def worst_per_device(
    names: npt.NDArray[Any], codes: npt.NDArray[np.intp], skew: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Per device with skewed samples, the skew of largest magnitude (signed)."""
    worst: dict[str, float] = {}
    for code in np.unique(codes[skew != 0]).tolist():
        mine = skew[codes == code]
        worst[names[code]] = float(mine[np.argmax(np.abs(mine))])
    return worst
