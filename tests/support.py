"""Test data: a loader for the data files in ``fixtures/`` and a factory for messages."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.model import MessageQueueItem, MessageQueueStatus, QueueName, QueueState

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BASE_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_sequence = itertools.count()


def fixture_path(name: str) -> Path:
    return FIXTURES / name


def load_fixture(name: str) -> Any:
    return json.loads(fixture_path(name).read_text())


def make_message(**overrides: Any) -> MessageQueueItem:
    """A valid message; every call is distinct (id, recipient, created_at) unless overridden."""
    n = next(_sequence)
    domain = overrides.pop("domain", "example.com")
    tenant = overrides.get("tenant_id")
    campaign = overrides.get("campaign_id")
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "message_id": f"<m{n}@mtactl.test>",
        "queue_name": QueueName(domain=domain, tenant=tenant, campaign=campaign).format(),
        "recipient": f"user{n}@{domain}",
        "sender": "news@sender.test",
        "domain": domain,
        "status": MessageQueueStatus.ready,
        "queue_state": QueueState.active,
        "priority": 5,
        "size_bytes": 1000 + n,
        "num_attempts": 0,
        "max_attempts": 20,
        "created_at": BASE_TIME + timedelta(seconds=n),
    }
    values.update(overrides)
    return MessageQueueItem(**values)


def shared_fixture(name: str) -> bytes:
    """A file of MTA shapes under fixtures/ (copied from the shared fixtures; see fixtures/kumomta/README.md)."""
    return (FIXTURES / name).read_bytes()


def kumomta_records() -> dict[str, bytes]:
    """Every single KumoMTA log record fixture, by record file name (log_delivery, ...)."""
    return {p.stem: p.read_bytes() for p in sorted((FIXTURES / "kumomta").glob("log_*.json"))}


def kumomta_fixture_counts() -> tuple[int, int]:
    """(events, mirrored messages) that ingesting every KumoMTA record fixture once stores: one event per listed
    recipient, and one message per spool id and recipient among the records that move the mirror."""
    from adapters.kumomta.events import record_decoder  # imported here: tests of the model alone do not need it
    from adapters.kumomta.mapping import message_uuid, observe

    parts = [p for raw in kumomta_records().values() for p in record_decoder.decode(raw).per_recipient()]
    return len(parts), len({message_uuid(p) for p in parts if observe(p) is not None})


def zonemta_entries() -> dict[str, bytes]:
    """Every ZoneMTA log:entry fixture, by file name (log_entry_accepted, ...), as ZoneMTA makes it (the fixtures'
    annotation ``_comment`` removed)."""
    entries = {}
    for path in sorted((FIXTURES / "zonemta" / "events").glob("log_entry_*.json")):
        entry = json.loads(path.read_bytes())
        entry.pop("_comment", None)
        entries[path.stem] = json.dumps(entry).encode()
    return entries


def zonemta_batch() -> bytes:
    """Every log:entry fixture in one JSON array: what the contract check posts."""
    return b"[" + b",".join(zonemta_entries().values()) + b"]"


def zonemta_http_bounce() -> tuple[bytes, dict[str, Any]]:
    """core/http-bounce's body as it is posted (a form), and its decoded view."""
    view = json.loads((FIXTURES / "zonemta" / "events" / "http_bounce_post.json").read_bytes())
    view.pop("_comment", None)
    return (FIXTURES / "zonemta" / "events" / "http_bounce_post.form").read_bytes().strip(), view
