"""Every MTA's event source, by the name its events are stored under (as saq's ``Queue.from_url`` picks a backend).

The control plane finds an MTA's log records here; adding an MTA is adding its source to ``EVENT_SOURCES``.
"""

from __future__ import annotations

from adapters.kumomta.events import RecordType
from adapters.kumomta.log_source import KUMOMTA
from adapters.model.events import EventSource

EVENT_SOURCES: dict[str, EventSource] = {source.name: source for source in (KUMOMTA,)}

__all__ = ["EVENT_SOURCES", "RecordType", "event_source"]


def event_source(name: str) -> EventSource | None:
    return EVENT_SOURCES.get(name)
