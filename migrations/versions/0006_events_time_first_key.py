"""events: the primary key leads with event_at, and the index on event_at alone goes.

The key was (dedupe_key, event_at): each new event landed at a random place in the largest index of the table.
Led by event_at, which for a live log only grows, new keys append at the right edge of the index, and the key
also orders the /events listing (event_at, dedupe_key), so ix_events_event_at had nothing left to do.
Uniqueness is the same pair of columns either way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _primary_key(columns: list[str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # On the partitioned parent: Postgres drops and rebuilds the key on every partition.
        op.execute("ALTER TABLE events DROP CONSTRAINT pk_events")
        op.execute(f"ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY ({', '.join(columns)})")
    else:
        with op.batch_alter_table("events", recreate="always") as batch:
            batch.drop_constraint("pk_events", type_="primary")
            batch.create_primary_key("pk_events", columns)


def upgrade() -> None:
    op.drop_index("ix_events_event_at", table_name="events")
    _primary_key(["event_at", "dedupe_key"])


def downgrade() -> None:
    _primary_key(["dedupe_key", "event_at"])
    op.create_index("ix_events_event_at", "events", ["event_at"])
