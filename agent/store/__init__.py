"""The agent's durable SQLite store (agent.db): raw samples and derived tables."""

from agent.config import declared_inventory
from agent.store.sqlite import StoreCorrupt, StoreError, check_integrity
from agent.store.store import IngestItem, IngestResult, LinkItem, Store

__all__ = [
    "IngestItem",
    "IngestResult",
    "LinkItem",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "check_integrity",
    "declared_inventory",
]
