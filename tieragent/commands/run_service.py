"""Wiring of `tieragent run`'s reporting and delivery threads (agent.service).

Everything a configured `reporting:` or `delivery:` section needs is checked here before
the agent starts: the signing key opens with its passphrase, the policy, declarations and
benchmark files load, the bureau key parses and the TLS files exist. A mistake stops the
start with exit 2 naming the file and the key, not a thread that dies later.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import FactoryConfig
from agent.outbox import Outbox
from agent.protocol.envelope import EnvelopeError
from agent.protocol.keys import PRIVATE_NAME, KeyFileError, load_private_key
from agent.protocol.mqtt import BrokerError, parse_broker_url
from agent.publisher import PublisherSettings
from agent.service import (
    DeliveryLoop,
    ReportScheduler,
    ServicePaths,
    ServiceState,
    policy_files,
    publisher_settings,
)
from agent.service_config import Reporting
from tieragent.console import InvalidInput

log = logging.getLogger("tieragent.cli")


def check_reporting(config: FactoryConfig, config_path: Path, paths: ServicePaths) -> None:
    """Raise InvalidInput unless the `reporting:` section can sign reports."""
    reporting = config.reporting
    if reporting is None:
        return
    key_dir = paths.key_dir(reporting)
    try:
        passphrase = reporting.passphrase
        load_private_key(key_dir / PRIVATE_NAME,
                         passphrase.resolve().encode() if passphrase is not None else None)
    except KeyFileError as error:
        raise InvalidInput(f"{config_path}: reporting.key_dir: {error}") from None
    files = policy_files(reporting)
    try:
        files.load()
    except Exception as error:  # the policy loader's own errors name the file
        raise InvalidInput(f"{config_path}: reporting: {error}") from None


def check_delivery(config: FactoryConfig, config_path: Path) -> PublisherSettings | None:
    """The publisher settings of the `delivery:` section, or InvalidInput naming the key."""
    delivery = config.delivery
    if delivery is None:
        return None
    try:
        parse_broker_url(delivery.broker_url)
    except BrokerError as error:
        raise InvalidInput(f"{config_path}: delivery.broker_url: {error}") from None
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(delivery, name)
        if path is not None and not path.is_file():
            raise InvalidInput(f"{config_path}: delivery.{name}: {path} does not exist")
    try:
        return publisher_settings(delivery, config.factory.factory_id)
    except (OSError, EnvelopeError, KeyError, TypeError) as error:
        raise InvalidInput(
            f"{config_path}: delivery.bureau_key: {delivery.bureau_key} is not the bureau's "
            f"public key JWK ({error}); save what `tieragent bureau show-key` prints"
        ) from None


@dataclass
class ServiceThreads:
    """The reporting and delivery threads of one `run`; stopped and joined by `stop`."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, name: str, target: Callable[[threading.Event], None]) -> None:
        def guarded() -> None:
            try:
                target(self.stop_event)
            except Exception:  # the thread's own loop logs expected failures
                log.exception("The %s thread stopped on an unexpected error.", name)

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout_s)


def start_service(config: FactoryConfig, config_path: Path, data_dir: Path,
                  state: ServiceState, clock: Callable[[], float]) -> ServiceThreads:
    """Check the sections, then start the threads they ask for (none without them)."""
    paths = ServicePaths(config_path.absolute(), data_dir)
    check_reporting(config, config_path, paths)
    settings = check_delivery(config, config_path)
    if config.reporting is not None or settings is not None:
        # A damaged outbox (lost reports, corrupt file) stops `run` here with its message,
        # not later inside a thread while collection carries on.
        Outbox(paths.outbox).close()
    threads = ServiceThreads()
    if config.reporting is not None:
        scheduler = ReportScheduler(config, paths, state, clock)
        threads.start("reporting", scheduler.run)
    else:
        log.info("No `reporting:` section: collecting only; build reports with "
                 "`tieragent report`.")
    if settings is not None:
        settings = dataclasses.replace(
            settings, key_dir=paths.key_dir(config.reporting or Reporting()))
        threads.start("delivery", DeliveryLoop(settings, paths, state).run)
    elif config.reporting is not None:
        log.info("No `delivery:` section: reports stay queued in %s for `tieragent report "
                 "send`.", paths.outbox)
    return threads
