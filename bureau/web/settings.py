"""What `tieragent bureau web` is started with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indicators.policy import DEFAULT_POLICY


@dataclass(frozen=True)
class WebSettings:
    """`db`: the bureau database the receiver writes (a SQLite file, or a postgresql://
    URL). `bureau_key`: the bureau's signing key (seals downloaded evidence folders; without
    it the zip download answers 503). The factory page evaluates each factory with `policy`,
    `benchmarks` and, when the folder has one, `declarations_dir/<factory_id>.yaml` (the
    factory's own declarations). `secure_cookies`: mark cookies Secure (set it when the
    portal is served over HTTPS)."""

    db: Path | str
    bureau_key: Path | None = None
    policy: Path = DEFAULT_POLICY
    benchmarks: Path | None = None
    declarations_dir: Path | None = None
    secure_cookies: bool = False
    session_ttl_s: float = 8 * 3600.0
