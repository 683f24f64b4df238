from __future__ import annotations

import pytest

from adapters.model import (
    TERMINAL_STATUSES,
    MessageQueueStatus,
    StatusTransitionError,
    can_transition,
    check_transition,
)

S = MessageQueueStatus


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
@pytest.mark.parametrize("later", list(S))
def test_nothing_moves_a_terminal_message_to_another_state(terminal: S, later: S) -> None:
    assert can_transition(terminal, later) is (later == terminal)


def test_terminal_states_are_exactly_delivered_bounced_expired_cancelled() -> None:
    assert {s.value for s in TERMINAL_STATUSES} == {"delivered", "bounced", "expired", "cancelled"}


@pytest.mark.parametrize("queued", [s for s in S if s not in TERMINAL_STATUSES])
def test_a_queued_message_can_reach_every_state(queued: S) -> None:
    assert all(can_transition(queued, s) for s in S)


def test_a_late_transient_failure_does_not_undo_a_delivery() -> None:
    with pytest.raises(StatusTransitionError, match="'delivered' to 'deferred'"):
        check_transition(S.delivered, S.deferred)


def test_the_queued_index_condition_names_exactly_the_statuses_still_in_a_queue() -> None:
    from controlplane.db.messages import IN_QUEUE
    from controlplane.db.tables import QUEUED_CONDITION

    assert "status IN (" + ", ".join(f"'{s}'" for s in IN_QUEUE) + ")" == QUEUED_CONDITION
