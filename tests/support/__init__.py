"""Helpers shared by several test folders (and by bench/delivery.py), imported as
`tests.support.<module>`; a helper only one folder uses stays in that folder.

- ports: `free_port()`, a free loopback port.
- waiting: `wait_until` (sync, returns a bool) and `wait_until_async` (fails on timeout).
- paths: the repository `ROOT` and `python_env()` for child processes that import these.
- pki: a throwaway CA with broker and client certificates (`make_pki`).
- mosquitto: `Broker`, a real Mosquitto on a free port (fixture `mosquitto` in
  tests/conftest.py).
- bureau_receiver: `start_bureau`, a bureau receiver with the test agents enrolled.
- reports: synthetic inventory, base measures, segments and signed reports.
- fault_proxy: `FaultProxy`, a userspace TCP proxy that breaks links on demand.
"""
