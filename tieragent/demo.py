"""`tieragent demo`: the whole chain on one machine, in under a minute (BENCHMARKS.md).

simulator (OPC UA + Modbus, compressed profile) → agent live collection (20 s), and in
parallel a year-to-date history from the offline generator backfilled through the same
derivation code → daily reports, signed and committed to the outbox → MQTT (embedded
amqtt broker, or --broker) → bureau receiver (verify, store, signed receipt) → annual
evaluation at the bureau → evidence folder verified offline.

Every process the demo starts is stopped by PID at the end, and every port is a free
loopback port chosen at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from joserfc.jwk import OKPKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.backfill import backfill
from agent.config import FactoryConfig, load_config, parse_config
from agent.metrics import AgentMetrics
from agent.outbox import Outbox
from agent.protocol.keys import init_keys
from agent.publisher import Publisher, PublisherSettings
from agent.reporter import ReportContext, build_period_reports, days_between
from agent.runtime import Runtime, build_connectors
from agent.store.store import Store
from bureau.annual import AnnualError
from bureau.receipts import bureau_public, load_or_create_bureau_key
from bureau.receiver import Receiver, ReceiverSettings
from bureau.registry import KeyRegistry
from bureau.store import SqliteReportStore
from indicators.policy import DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS, PolicyFiles
from simulator.agent_config import export_agent_config
from simulator.history import generate_history
from simulator.model import load_factory
from simulator.opcua_face import free_port

_DATA = files("tieragent") / "data"
FACTORY = Path(str(_DATA / "factories" / "demo.yaml"))
AGENT_CONFIG = Path(str(_DATA / "demo-agent.yaml"))
# The demo factory is fictitious: example benchmarks and example declarations are its own.
DEMO_POLICY = PolicyFiles(DEFAULT_POLICY, EXAMPLE_BENCHMARKS, EXAMPLE_DECLARATIONS)
BUREAU_ID = "bureau"


class DemoError(Exception):
    """A step of the demo failed; str() says which and why."""


def wait_for_port(port: int, deadline_s: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DemoError(f"a helper process exited early (code {process.returncode})")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise DemoError(f"nothing listens on 127.0.0.1:{port} after {deadline_s:.0f} s")


@dataclass
class Processes:
    """Child processes started by the demo; stopped by PID, politely first."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        handle = log.open("wb")
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def stop_all(self) -> None:
        for process in reversed(self.started):
            self.stop(process)


@contextlib.contextmanager
def embedded_broker(processes: Processes, work: Path) -> Iterator[str]:
    """amqtt (MQTT 3.1.1) on a free loopback port."""
    port = free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    path = work / "amqtt.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    amqtt = Path(sys.executable).with_name("amqtt")
    process = processes.start([str(amqtt), "-c", str(path)], work / "amqtt.log")
    wait_for_port(port, 20, process)
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        processes.stop(process)


def year_to_date(year: int, time_zone: str, grace_s: float = 0.0) -> tuple[date, date]:
    """First and last local day of `year` that is over, with `grace_s` for late data (the
    whole year if past): a report is never built for a day that has not ended."""
    today = datetime.fromtimestamp(time.time() - grace_s, ZoneInfo(time_zone)).date()
    first = date(year, 1, 1)
    last = min(date(year, 12, 31), today - timedelta(days=1))
    if last < first:
        raise DemoError(f"{year} has no complete day yet; pass --year {today.year - 1}")
    return first, last


def local_epoch(day: date, time_zone: str) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(time_zone)).timestamp()


@dataclass
class LiveResult:
    samples: int
    devices: int
    intervals: int
    seconds: float


def run_live(config: FactoryConfig, data_dir: Path, seconds: float) -> LiveResult:
    """Collect from the simulator's servers for `seconds` (agent runtime, own event loop)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(data_dir / "agent.db", config)
    runtime = Runtime(config, store, build_connectors(config), AgentMetrics())
    started = time.time()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await runtime.run(stop)

    try:
        asyncio.run(main())
        end = time.time()
        raw = store.raw_samples(started - 3600, end + 3600)
        intervals = store.intervals(started - 3600, end + 3600)
    finally:
        store.close()
    return LiveResult(
        samples=len(raw),
        devices=int(raw["device_id"].nunique()) if not raw.empty else 0,
        intervals=len(intervals),
        seconds=end - started,
    )


def run_demo(
    out: Path,
    broker_url: str | None,
    live_s: float,
    year: int,
    console: Console,
    *,
    history_days: int | None = None,
) -> int:
    """Run the chain; `history_days` shortens the history to its last N days (for tests)."""
    if out.exists():
        shutil.rmtree(out)
    for sub in ("agent", "bureau", "sim", "logs"):
        (out / sub).mkdir(parents=True)
    processes = Processes()
    demo_config = load_config(AGENT_CONFIG)
    tz = demo_config.factory.time_zone
    factory_id = demo_config.factory.factory_id
    first_day, last_day = year_to_date(year, tz, demo_config.report_grace_s)
    if history_days is not None:
        first_day = max(first_day, last_day - timedelta(days=history_days - 1))
    days = days_between(first_day, last_day)
    factory = load_factory(FACTORY)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            # 1. Keys and enrolment at the bureau (the offline "upload the JWK" route).
            agent_keys = out / "agent" / "keys"
            agent_jwk = init_keys(agent_keys, None)
            bureau_key = load_or_create_bureau_key(out / "bureau" / "bureau-key.pem")
            bureau_db = out / "bureau" / "bureau.db"
            registry_store = SqliteReportStore(bureau_db)
            with registry_store.transaction():
                KeyRegistry(registry_store.db).enroll(factory_id, {
                    k: agent_jwk[k] for k in ("kty", "crv", "x")
                })
            registry_store.close()
            console.print(f"[bold]1[/] keys: agent kid {agent_jwk['kid']} enrolled at the bureau")

            # 2. Broker and bureau receiver.
            if broker_url is None:
                broker_url = stack.enter_context(embedded_broker(processes, out / "logs"))
                protocol: Literal["5", "3.1.1"] = "3.1.1"  # amqtt speaks 3.1.1 only
                console.print(f"[bold]2[/] embedded MQTT broker (amqtt) at {broker_url}")
            else:
                protocol = "5"
                console.print(f"[bold]2[/] MQTT broker {broker_url}")
            receiver = Receiver(
                ReceiverSettings(
                    db=bureau_db, broker_url=broker_url, bureau_id=BUREAU_ID,
                    client_id="tieragent-demo-bureau", share_group=None, protocol=protocol,
                    reorder_timeout_s=86_400.0,
                ),
                bureau_key,
            )
            receiver.start()
            stop_ticks = threading.Event()
            def tick_receiver() -> None:
                while not stop_ticks.wait(1.0):
                    receiver.tick()

            ticker = threading.Thread(target=tick_receiver, daemon=True)
            ticker.start()
            stack.callback(receiver.stop)
            stack.callback(stop_ticks.set)

            # 3. Simulator with a compressed time profile.
            opcua_port, modbus_port = free_port(), free_port()
            sim = processes.start(
                [sys.executable, "-m", "tieragent", "sim", "--factory", str(FACTORY),
                 "--profile", "compressed", "--opcua-port", str(opcua_port),
                 "--modbus-port", str(modbus_port), "--security", "none",
                 "--ledger-dir", str(out / "sim" / "ledger")],
                out / "logs" / "simulator.log",
            )
            wait_for_port(opcua_port, 60, sim)
            wait_for_port(modbus_port, 30, sim)
            stack.callback(processes.stop, sim)
            console.print(
                f"[bold]3[/] simulator: opc.tcp://127.0.0.1:{opcua_port}, "
                f"modbus 127.0.0.1:{modbus_port} (compressed profile)"
            )
            live_config = parse_config(
                export_agent_config(
                    factory, f"opc.tcp://127.0.0.1:{opcua_port}", "127.0.0.1", modbus_port,
                    profile="compressed",
                ),
                "<demo live config>",
            )

            # 4. Live collection and, in parallel, the year's history and backfill.
            live: dict[str, LiveResult] = {}
            errors: list[BaseException] = []

            def live_job() -> None:
                try:
                    live["result"] = run_live(live_config, out / "agent" / "live", live_s)
                except BaseException as error:  # reported after the join
                    errors.append(error)

            live_thread = threading.Thread(target=live_job, daemon=True)
            live_thread.start()
            history_dir = out / "sim" / "history"
            data_dir = out / "agent" / "data"
            with _progress(console) as progress:
                gen = progress.add_task("history (offline generator)", total=len(factory.devices))
                generate_history(
                    factory, history_dir, local_epoch(first_day, tz),
                    local_epoch(last_day + timedelta(days=1), tz), seed=2026,
                    sample_interval_s=900.0,
                    progress=lambda _d, done, total: progress.update(gen, completed=done),
                )
                imp = progress.add_task("backfill into the agent store", total=None)
                summary = backfill(
                    demo_config, history_dir, data_dir / "agent.db",
                    progress=lambda _d, done, total: progress.update(
                        imp, completed=done, total=total
                    ),
                )
                waiting = progress.add_task(f"live collection ({live_s:.0f} s)", total=live_s)
                while live_thread.is_alive():
                    live_thread.join(0.5)
                    progress.update(waiting, completed=min(live_s, time.monotonic() - started))
                if not errors:  # it may have ended before the bar was drawn
                    progress.update(waiting, completed=live_s)
            if errors:
                raise DemoError(f"live collection failed: {errors[0]}")
            processes.stop(sim)
            live_result = live["result"]
            console.print(
                f"[bold]4[/] live: {live_result.samples:,} samples from {live_result.devices} "
                f"devices in {live_result.seconds:.0f} s; history {first_day}..{last_day}: "
                f"{summary.samples:,} samples backfilled in {summary.seconds:.0f} s"
            )

            # 5. Daily reports, signed, delivered while they are built.
            outbox = Outbox(data_dir / "outbox.db")
            store = Store.open(data_dir / "agent.db", demo_config)
            stack.callback(store.close)
            context = ReportContext(
                config=demo_config, config_path=AGENT_CONFIG, store=store, outbox=outbox,
                key_dir=agent_keys, policy=DEMO_POLICY.load(), bureau_id=BUREAU_ID,
            )
            console.print(
                "  reports evaluated with the demo's EXAMPLE files, passed explicitly: "
                f"benchmarks {DEMO_POLICY.benchmarks} (illustrative numbers, not statistics) "
                f"and declarations {DEMO_POLICY.declarations} (the fictitious demo factory's);"
                " a real factory passes its own --declarations and --benchmarks",
                highlight=False,
            )
            settings = PublisherSettings(
                broker_url=broker_url, factory_id=factory_id,
                bureau_keys=(bureau_public(bureau_key),), protocol=protocol,
                keepalive_s=10, receipt_timeout_s=20.0, reconnect_min_s=0.2,
                reconnect_max_s=5.0, window=8,
            )
            stop_publisher = threading.Event()
            publisher_errors: list[BaseException] = []

            def deliver() -> None:
                # SQLite connections belong to one thread: the publisher opens its own.
                try:
                    publisher = Publisher(settings, Outbox(data_dir / "outbox.db"))
                    publisher.start()
                    try:
                        publisher.run(stop_publisher)
                    finally:
                        publisher.stop()
                except BaseException as error:  # reported below
                    publisher_errors.append(error)

            sender = threading.Thread(target=deliver, daemon=True)
            sender.start()
            with _progress(console) as progress:
                task = progress.add_task("daily reports: build + sign", total=len(days))
                build_period_reports(context, days, lambda _day, _built: progress.advance(task))
                acked = progress.add_task("delivered with signed receipts", total=len(days))
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    unacked = outbox.unacked()
                    progress.update(acked, completed=len(days) - unacked)
                    if unacked == 0 or publisher_errors:
                        break
                    time.sleep(0.3)
            stop_publisher.set()
            sender.join(10)
            if publisher_errors:
                raise DemoError(f"delivery failed: {publisher_errors[0]}")
            counts = outbox.counts()
            console.print(
                f"[bold]5[/] outbox: {counts.get('acked', 0)} acknowledged, "
                f"{counts.get('pending', 0)} pending, {counts.get('inflight', 0)} in flight, "
                f"{counts.get('rejected', 0)} rejected"
            )

            receiver.tick()
            stop_ticks.set()
            ticker.join(5)
            receiver.stop()

            # 6. The bureau's annual evaluation and the evidence folder.
            return _bureau_year(
                console, bureau_db=bureau_db, bureau_key=bureau_key, factory_id=factory_id,
                year=year,
                through=last_day, out=out, delivered=counts.get("acked", 0), days=len(days),
                live=live_result, started_mono=started,
            )
    finally:
        processes.stop_all()


def _bureau_year(
    console: Console, *, bureau_db: Path, bureau_key: OKPKey, factory_id: str, year: int,
    through: date, out: Path,
    delivered: int, days: int, live: LiveResult, started_mono: float,
) -> int:
    from bureau.evidence_export import export_evidence
    from bureau.evidence_verify import verify_evidence_dir
    from tieragent.commands.bureau_annual import render_summary
    from tieragent.evaluation_view import render_evaluation

    files = DEMO_POLICY
    store = SqliteReportStore(bureau_db)
    try:
        states = Counter(report.state for report in store.reports(factory_id))
        evidence_dir = out / "evidence" / f"{factory_id}-{year}"
        exported = export_evidence(store, factory_id, year, evidence_dir, files, through=through,
                                   bureau_key=bureau_key)
    except AnnualError as error:
        raise DemoError(f"annual evaluation at the bureau: {error}") from None
    finally:
        store.close()
    verified = verify_evidence_dir(evidence_dir, [bureau_public(bureau_key)])
    annual = exported.evaluation
    console.rule(f"Annual evaluation at the bureau: {factory_id}, {year} (through {through})")
    render_summary(annual, console)
    render_evaluation(annual.evaluation, console)
    indicators = annual.indicators
    rows = [
        ("live collection",
         f"{live.samples:,} samples, {live.devices} devices, {live.seconds:.0f} s"),
        ("daily reports", f"{days} built and signed, {delivered} acknowledged by signed receipt"),
        ("stored at the bureau", ", ".join(f"{n} {state}" for state, n in sorted(states.items()))),
    ]
    for key in ("oee", "availability", "performance", "quality_ratio", "networking_rate",
                "key_process_cnc_rate", "data_collection_rate", "energy_per_unit"):
        value = indicators.get(key)
        if value is not None:
            shown = "—" if value.value is None else f"{value.value:.4g}"
            rows.append((key, shown + ("" if value.reason is None else f" ({value.reason})")))
    tier = annual.evaluation.to_json()
    rows.append(("tier reached", str(tier.get("tier_reached") or "none")))
    rows.append((f"gap to {tier.get('next_tier')}", ", ".join(tier.get("gaps") or []) or "—"))
    rows.append(("evidence folder", str(evidence_dir)))
    rows.append(("HTML evidence report", str(evidence_dir / "report.html")))
    rows.append(("PDF evidence report", str(evidence_dir / "report.pdf")))
    rows.append(("offline verification",
                 "OK" if verified.ok else "FAILED: " + "; ".join(verified.problems[:3])))
    # Everything from the keys to the verified evidence folder (the interpreter's start-up,
    # about a second, is before it).
    rows.append(("demo time", f"{time.monotonic() - started_mono:.0f} s"))
    console.print(summary_table(rows, "tieragent demo"))
    return 0 if verified.ok and delivered == days else 1


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )


def summary_table(rows: list[tuple[str, str]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("")
    for name, value in rows:
        table.add_row(name, value)
    return table
