"""Stopping the receiver while another thread is inside `tick` or `handle` must not crash
the process: the demo once died with a segfault in libsqlite3 when `stop` closed the store
under a running `tick` (dmesg: "segfault ... in libsqlite3.so"). Run in a child process, so
that a regression fails this test instead of killing the test run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from joserfc.jwk import OKPKey
    from bureau.receiver import Receiver, ReceiverSettings

    folder = Path(sys.argv[1])
    for n in range(150):
        receiver = Receiver(ReceiverSettings(db=folder / f"b{n}.db",
                                             broker_url="mqtt://127.0.0.1:1", bureau_id="b"),
                            OKPKey.generate_key("Ed25519"))
        go = threading.Event()

        def hammer() -> None:
            go.wait()
            for _ in range(200):
                receiver.tick()
                receiver.handle("tieragent/v1/f-1/report", b"not a report")

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for thread in threads:
            thread.start()
        go.set()
        receiver.stop()
        receiver.stop()  # twice is fine
        for thread in threads:
            thread.join()
    print("ok")
""")


def test_stop_while_ticking_and_handling_does_not_crash(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode,
                                                                   done.stderr[-2000:])
