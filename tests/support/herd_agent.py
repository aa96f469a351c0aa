"""One agent of the thundering-herd run (T10), as a child process:

    python -m tests.support.herd_agent BROKER_URL FACTORY_ID OUTBOX_PATH BUREAU_JWK_PATH

A real Publisher (test-profile timers: keepalive 2 s, reconnect 0.1-2 s with jitter) on an
empty outbox; prints `connected <time.monotonic()>` each time a connection is made (the
monotonic clock is one system-wide clock, so the parent compares times across processes);
exits when its stdin closes.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from agent.outbox import Outbox
from agent.publisher import Publisher, PublisherSettings


def main(url: str, factory_id: str, outbox_path: str, bureau_jwk: str) -> None:
    settings = PublisherSettings(
        broker_url=url, factory_id=factory_id,
        bureau_keys=(json.loads(Path(bureau_jwk).read_text()),), protocol="5",
        keepalive_s=2, reconnect_min_s=0.1, reconnect_max_s=2.0, receipt_timeout_s=3.0,
    )
    publisher = Publisher(settings, Outbox(Path(outbox_path)))
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    publisher.start()
    seen = 0
    try:
        while not stop.is_set():
            publisher.step(0.05)
            connects = publisher.metrics["connects_total"]
            if connects != seen:
                seen = connects
                print(f"connected {time.monotonic():.6f}", flush=True)
    finally:
        publisher.stop()


if __name__ == "__main__":
    main(*sys.argv[1:5])
