"""Every MTA's event source, by the name its events are stored under (as saq's ``Queue.from_url`` picks a backend).

The control plane finds an MTA's log records here. They come from the drivers (``adapters.registry``): adding an
MTA's driver adds its event source.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from adapters.model.events import EventSource
from adapters.registry import DRIVERS

EVENT_SOURCES: dict[str, EventSource] = {
    driver.events.name: driver.events for driver in DRIVERS.values() if driver.events is not None
}

# What every source logs when a message is received (queued) and delivered: the metrics' time windows count these.
RECEIVED_TYPES: tuple[str, ...] = tuple(kind for source in EVENT_SOURCES.values() for kind in source.received_types)
DELIVERED_TYPES: tuple[str, ...] = tuple(kind for source in EVENT_SOURCES.values() for kind in source.delivered_types)
# The outcomes domain health and the throttling rules weigh (``EventSource.bounced_types``…).
BOUNCED_TYPES: tuple[str, ...] = tuple(kind for source in EVENT_SOURCES.values() for kind in source.bounced_types)
DEFERRED_TYPES: tuple[str, ...] = tuple(kind for source in EVENT_SOURCES.values() for kind in source.deferred_types)
COMPLAINT_TYPES: tuple[str, ...] = tuple(kind for source in EVENT_SOURCES.values() for kind in source.complaint_types)

__all__ = [
    "BOUNCED_TYPES",
    "COMPLAINT_TYPES",
    "DEFERRED_TYPES",
    "EVENT_SOURCES",
    "RECEIVED_TYPES",
    "RecordType",
    "event_source",
]

if TYPE_CHECKING:
    from adapters.kumomta.events import RecordType
else:
    # The record types of every source (KumoMTA's ``Delivery``…, ZoneMTA's ``ACCEPTED``…), as the events API
    # filters by them: one enum, built from the sources so that a new source adds its types here by itself. (The
    # type checker is shown one source's enum: it reads the functional form only with a literal list.)
    RecordType = enum.StrEnum(
        "RecordType", {kind: kind for source in EVENT_SOURCES.values() for kind in source.record_types}
    )


def event_source(name: str) -> EventSource | None:
    return EVENT_SOURCES.get(name)
