"""A stored event's payload read again by its MTA's event source, for the projections."""

from __future__ import annotations

import logging
from functools import lru_cache

from adapters.model.events import EventFacts
from adapters.sources import event_source
from controlplane.projections.log import LoggedEvent

log = logging.getLogger("mtactl.projections")


def facts_of(event: LoggedEvent) -> EventFacts | None:
    """None when no source of this version reads the event (it stays in the log, and a rebuild after an upgrade
    that reads it applies it)."""
    try:
        return _facts(event.source, event.payload, event.recipient)
    except Exception as exc:  # accepted once, so it decoded then: only a change of the source's rules gets here
        log.warning("event %s of %s no longer decodes: %s", event.position.dedupe_key.hex(), event.source, exc)
        return None


# Every projection reads the same events at about the same time: the first to read one decodes it, the others
# find it here (decoding and mapping is most of a projection's own CPU, bench/decode.py). Facts are immutable.
@lru_cache(maxsize=10_000)  # two passes of 5,000 events; about 20 MB
def _facts(source_name: str, payload: str, recipient: str) -> EventFacts | None:
    source = event_source(source_name)
    if source is None:
        return None
    return source.facts(payload, recipient)
