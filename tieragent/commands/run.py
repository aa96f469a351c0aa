"""`tieragent run`, `tieragent backfill` and `tieragent measures` (register with `register`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from agent.backfill import CHUNK_SAMPLES, HistoryError
from agent.config import load_config
from agent.store import Store, StoreError
from indicators.columns import MEASURE_COLUMNS
from tieragent.console import InvalidInput, RunFailed, err_console, handle_errors_failing_on

DB_NAME = "agent.db"

console = Console()
log = logging.getLogger("tieragent.cli")

if TYPE_CHECKING:
    import pandas as pd


# In these commands a store or a history folder that cannot be used means the run failed (1).
@handle_errors_failing_on(StoreError, HistoryError)
def run(
    config: Path = typer.Option(..., "--config", help="Factory configuration YAML."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir",
                                  help="Folder of agent.db, outbox.db and (by default) keys/."),
    metrics_port: int = typer.Option(9108, "--metrics-port",
                                     help="Loopback port of /metrics and /healthz (0: any)."),
    log_json: bool = typer.Option(False, "--log-json", help="Log JSON lines to stderr."),
    duration: float | None = typer.Option(None, "--duration", help="Stop after S seconds."),
    influx_url: str | None = typer.Option(None, "--influx-url",
                                          help="Mirror samples to this InfluxDB v2 URL."),
    influx_org: str = typer.Option("tieragent", "--influx-org"),
    influx_bucket: str = typer.Option("tieragent", "--influx-bucket"),
    influx_token_env: str | None = typer.Option(
        None, "--influx-token-env", help="Environment variable holding the InfluxDB token."),
) -> None:
    """Collect from every configured connection; with `reporting:` and `delivery:` in the
    configuration, also report every period that is over and deliver it to the bureau.

    One instance per data directory: a second `run` on the same --data-dir exits 2 naming
    the pid that holds `<data-dir>/agent.lock`.
    """
    from agent import sd_notify
    from agent.clock_watch import ClockWatch, faked_monotonic, watch_clock
    from agent.instance_lock import InstanceLock
    from agent.metrics import AgentMetrics, MetricsServer
    from agent.modbus_splits import SPLITS_NAME
    from agent.runtime import Runtime, build_connectors
    from agent.service import ServiceState, register_metrics, with_service_health
    from tieragent.clock import ClockOffsetInvalid, wall_clock
    from tieragent.commands.run_service import start_service
    from tieragent.logging_setup import setup_logging

    setup_logging(json_lines=log_json)
    faked = faked_monotonic(time.time(), time.monotonic())
    if faked:
        log.warning("Clock self-check: %s.", faked)
    factory = load_config(config, resolve_secrets=True)  # refuse to start without them
    try:
        clock = wall_clock()
    except ClockOffsetInvalid as exc:
        raise InvalidInput(str(exc)) from None
    try:
        connectors = build_connectors(factory, splits_file=data_dir / SPLITS_NAME, clock=clock)
    except ValueError as exc:  # a signal binding the protocol connector cannot serve
        raise InvalidInput(f"{config}: {exc}") from None
    except ImportError as exc:
        raise RunFailed(f"a protocol connector is not available: {exc}") from None
    lock = InstanceLock(data_dir)
    lock.acquire()  # before the store opens: two writers would count everything twice
    try:
        store = Store.open(data_dir / DB_NAME, factory)
    except BaseException:
        lock.release()
        raise
    store.close_hours_in_child = True  # this process only collects: no pandas in it
    metrics = AgentMetrics()
    mirror = None
    if influx_url:
        from agent.mirror import InfluxMirror

        token = os.environ.get(influx_token_env, "") if influx_token_env else ""
        mirror = InfluxMirror(influx_url, influx_org, influx_bucket, token)
    runtime = Runtime(factory, store, connectors, metrics, mirror=mirror, clock=clock)
    state = ServiceState()
    register_metrics(metrics.registry, state)

    def health() -> dict[str, Any]:
        return with_service_health(runtime.health(), state, factory.delivery, time.time())

    try:
        threads = start_service(factory, config, data_dir, state, clock)
    except BaseException:
        store.close()
        lock.release()
        raise
    try:
        server = MetricsServer(metrics, health, metrics_port)
    except OSError as exc:
        threads.stop()
        store.close()
        lock.release()
        where = f"127.0.0.1:{metrics_port}"
        raise RunFailed(f"cannot serve metrics on {where}: {exc.strerror}") from None
    server.start()
    log.info("Metrics served.", extra={"fields": {"url": f"http://127.0.0.1:{server.port}/metrics"}})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        # Under systemd (Type=notify, WatchdogSec=): READY=1, WATCHDOG=1 while healthy, STOPPING=1.
        notifier = sd_notify.Notifier.from_env()
        notifying = asyncio.create_task(sd_notify.supervise(
            notifier, runtime.writer_keeping_up, stop,
            sd_notify.watchdog_interval()), name="sd-notify")
        clock_watching = asyncio.create_task(watch_clock(
            ClockWatch(clock), stop, lambda _step: metrics.clock_jumps.inc()), name="clock")
        try:
            await runtime.run(stop)
        finally:
            stop.set()
            await notifying
            await clock_watching

    try:
        asyncio.run(main())
    finally:
        threads.stop()
        server.stop()
        if mirror is not None:
            mirror.close()
        store.close()
        lock.release()


@handle_errors_failing_on(StoreError, HistoryError)
def backfill(
    config: Path = typer.Option(..., "--config", help="Factory configuration YAML."),
    history: Path = typer.Option(..., "--history", help="Simulator history folder."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db."),
    chunk_samples: int = typer.Option(
        CHUNK_SAMPLES, "--chunk-samples", min=1,
        help="Samples per transaction: after an interruption, at most this much is redone."),
) -> None:
    """Import the simulator's offline history through the live derivation code.

    Resumable: run again with the same history after an interruption, and it continues where
    it stopped (nothing is imported twice). Holds the data directory's lock, like `run`.
    """
    from agent.backfill import backfill as run_backfill

    factory = load_config(config)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console) as progress:
        task = progress.add_task("importing", total=None)

        def step(device_id: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=device_id)

        summary = run_backfill(factory, history, data_dir / DB_NAME, progress=step,
                               chunk_samples=chunk_samples)
    if summary.already_done == summary.devices:
        console.print(f"history {summary.history_id} is already imported into "
                      f"{data_dir / DB_NAME} ({summary.devices} devices); nothing to do",
                      highlight=False, soft_wrap=True)
    else:
        resumed = (f" (resumed: {summary.already_done} devices were already imported)"
                   if summary.already_done else "")
        console.print(
            f"imported {summary.samples:,} samples of {summary.devices} devices in "
            f"{summary.seconds:.1f} s into {data_dir / DB_NAME}{resumed}", highlight=False,
            soft_wrap=True,
        )
    if summary.outside:
        console.print(f"[yellow]not imported:[/] {summary.outside:,} samples outside the "
                      f"history's time range", highlight=False, soft_wrap=True)
    if summary.unstorable:
        console.print(f"[yellow]kept as bad samples without value:[/] {summary.unstorable:,} "
                      f"values the store cannot hold", highlight=False, soft_wrap=True)
    if summary.missing:
        console.print(f"[yellow]no samples for[/] {', '.join(summary.missing)} (time unknown, "
                      f"samples expected but not received)", highlight=False, soft_wrap=True)
    if summary.unknown:
        console.print(f"[yellow]ignored files of unknown devices[/] {', '.join(summary.unknown)}",
                      highlight=False, soft_wrap=True)


@handle_errors_failing_on(StoreError, HistoryError)
def measures(
    config: Path = typer.Option(..., "--config", help="Factory configuration YAML."),
    period: str = typer.Option(..., "--period", help="2026, 2026-11 or 2026-11-21 (local)."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Folder of agent.db."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the base measures of a period, summed per device and in total."""
    from agent.protocol.period import Period

    factory = load_config(config)
    start, end = Period.parse(period, factory.factory.time_zone).bounds()
    db = data_dir / DB_NAME
    if not db.exists():
        raise RunFailed(f"{db} does not exist; run `tieragent run` or `tieragent backfill` first")
    store = Store.open(db, factory)
    try:
        rows = store.base_measures(start, end)
    finally:
        store.close()
    per_device = summed_measures(rows)
    total = {c: float(per_device[c].sum()) for c in MEASURE_COLUMNS}
    if as_json:
        out: dict[str, Any] = {
            "period": period, "start": start, "end": end, "hours": len(rows),
            "devices": {d: {c: float(r[c]) for c in MEASURE_COLUMNS}
                        for d, r in per_device.iterrows()},
            "total": total,
        }
        print(json.dumps(out, indent=2, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=f"Base measures {period} ({factory.factory.time_zone})")
    shown = ("pot_s", "apt_s", "unk_s", "produced", "good", "scrap", "energy_kwh",
             "samples_expected", "samples_received")
    table.add_column("device")
    for column in shown:
        table.add_column(column, justify="right")
    for device_id, row in per_device.iterrows():
        table.add_row(str(device_id), *(f"{row[c]:,.1f}" for c in shown))
    table.add_row("[bold]total[/]", *(f"{total[c]:,.1f}" for c in shown))
    console.print(table)


def summed_measures(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-device sums of every measure column (index: device_id)."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=list(MEASURE_COLUMNS), index=pd.Index([], name="device_id"))
    return rows.groupby("device_id")[list(MEASURE_COLUMNS)].sum()


def register(app: typer.Typer) -> None:
    """Add `run`, `backfill` and `measures` to the `tieragent` app."""
    app.command("run")(run)
    app.command("backfill")(backfill)
    app.command("measures")(measures)
