"""The mirror's indexes, now that the mirror projection writes it: none that nothing reads, and the ones whose
column is mostly empty or at its default cover only the rows a filter can ask for.

Every update of a message changes ``status`` (an indexed column), so it is never a HOT update: each index gets a
new entry for every write of the row. What can be saved is entries for rows no query looks for:

* ``ix_message_queue_next_attempt_at``: no filter or sort reads ``next_attempt_at`` (and ingestion never sets
  it): dropped.
* ``queue_state`` is ``active`` for nearly every message, and ``bounce_classification``, ``routing_domain`` are
  empty for most (delivered messages, queues without a routing domain): their indexes keep only the other rows.
  A filter on a value (``queue_state=suspended``, ``bounce_type=hard``) implies the index's condition, so the
  planner still uses them; a filter on ``active`` matches nearly everything and reads ``created_at``'s index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PARTIAL = {
    "queue_state": "queue_state <> 'active'",
    "bounce_classification": "bounce_classification IS NOT NULL",
    "routing_domain": "routing_domain IS NOT NULL",
}


def upgrade() -> None:
    op.drop_index("ix_message_queue_next_attempt_at", table_name="message_queue")
    for column, condition in PARTIAL.items():
        name = f"ix_message_queue_{column}"
        op.drop_index(name, table_name="message_queue")
        where = sa.text(condition)
        op.create_index(name, "message_queue", [column, "created_at", "id"], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for column in PARTIAL:
        name = f"ix_message_queue_{column}"
        op.drop_index(name, table_name="message_queue")
        op.create_index(name, "message_queue", [column, "created_at", "id"])
    op.create_index("ix_message_queue_next_attempt_at", "message_queue", ["next_attempt_at"])
