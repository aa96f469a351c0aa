"""The import path of the benchmark scripts, set up here once: each script imports this module
before anything of the project (`import _paths`), while bench/ is still on the path.

Running `python bench/NAME.py` puts bench/ first on sys.path, where bench/bureau.py and
bench/indicators.py would shadow the project's packages of those names. So bench/ leaves the
path (the packages come from the editable install), and the repository root goes at its end
so that the scripts import each other as `bench.…` and the shared test helpers as
`tests.support.…` (bench/delivery.py), which are not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
