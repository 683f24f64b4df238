"""The message lifecycle: which status may follow which, written down once.

Every writer of ``message_queue.status`` (event ingestion, operations, the legacy importer) asks
``can_transition`` first. Terminal states are final: a late or replayed event never moves a delivered, bounced,
expired or cancelled message back into the queue.
"""

from __future__ import annotations

from adapters.model.queue import MessageQueueStatus as S

TERMINAL_STATUSES: frozenset[S] = frozenset({S.delivered, S.bounced, S.expired, S.cancelled})

_IN_QUEUE: frozenset[S] = frozenset({S.scheduled, S.ready, S.in_delivery, S.suspended, S.deferred})

# A message still in the queue may move to any other state, including back and forth between the in-queue
# states (a deferred message is rescheduled, a suspended one resumed). Nothing leaves a terminal state.
ALLOWED_TRANSITIONS: dict[S, frozenset[S]] = {
    **{status: frozenset(S) - {status} for status in _IN_QUEUE},
    **{status: frozenset() for status in TERMINAL_STATUSES},
}


class StatusTransitionError(ValueError):
    def __init__(self, current: S, new: S) -> None:
        super().__init__(f"status cannot change from {current.value!r} to {new.value!r}")
        self.current = current
        self.new = new


def can_transition(current: S, new: S) -> bool:
    """True when ``new`` may replace ``current``; staying in the same state is always allowed."""
    return current == new or new in ALLOWED_TRANSITIONS[current]


def check_transition(current: S, new: S) -> None:
    if not can_transition(current, new):
        raise StatusTransitionError(current, new)
