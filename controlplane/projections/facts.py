"""A stored event's payload read again by its MTA's event source, for the projections."""

from __future__ import annotations

import logging

from msgspec import UNSET

from adapters.model.events import EventFacts
from adapters.sources import event_source
from controlplane.projections.log import LoggedEvent

log = logging.getLogger("mtactl.projections")


def facts_of(event: LoggedEvent) -> EventFacts | None:
    """None when no source of this version reads the event (it stays in the log, and a rebuild after an upgrade
    that reads it applies it).

    Every projection of a pass reads the same ``LoggedEvent`` objects: the first to ask decodes the payload and
    keeps the facts on the event, the others find them there (decoding and mapping is most of a projection's own
    CPU, bench/decode.py), and they go with the pass. (An LRU cache of 10,000 did this before: it hashed every
    payload, and two lanes a pass apart missed it.)"""
    if event.decoded is UNSET:
        event.decoded = _facts(event)
    return event.decoded


def _facts(event: LoggedEvent) -> EventFacts | None:
    source = event_source(event.source)
    if source is None:
        return None
    try:
        return source.facts(event.payload, event.recipient)
    except Exception as exc:  # accepted once, so it decoded then: only a change of the source's rules gets here
        log.warning("event %s of %s no longer decodes: %s", event.position.dedupe_key.hex(), event.source, exc)
        return None
