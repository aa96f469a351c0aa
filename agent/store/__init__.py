"""The agent's durable SQLite store (agent.db): raw samples and derived tables."""

from agent.store.sqlite import StoreCorrupt, StoreError, check_integrity
from agent.store.store import IngestItem, IngestResult, LinkItem, Store, inventory_frame

__all__ = [
    "IngestItem",
    "IngestResult",
    "LinkItem",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "check_integrity",
    "inventory_frame",
]
