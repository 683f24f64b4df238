"""``message_search``: the text ``search_query`` matches, in a table of its own, kept by triggers on
``message_queue``; its trigram index moves there from ``message_queue``.

A message's row in ``message_queue`` is rewritten by nearly every event about it (status, attempts, times), and
such an update is not HOT (it changes indexed columns), so every rewrite added every trigram of recipient, sender
and subject to the GIN index again: 27 % of the mirror projection's Postgres CPU (bench/projections.py, 200,000
events, 7.77 s with the index, 5.68 s without). Those three columns are set by a message's first event and
almost never change, so here the text is written once per message and rewritten only when one of them changes.

The triggers fire for every writer of the mirror (the projection, operations, a purge, the legacy import), as
``message_counts``' do (0008). On Postgres they are statement-level with transition tables; a TRUNCATE of the
mirror empties this table too.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

SEARCHED = ("recipient", "sender", "subject")


def search_text(row: str) -> str:
    """The searched text of ``row`` (a table alias or NEW): the expression 0001 indexed on message_queue."""
    return f"lower({row}.recipient || ' ' || {row}.sender || ' ' || coalesce({row}.subject, ''))"


PG_FUNCTIONS = {
    "insert": (
        "REFERENCING NEW TABLE AS new_rows",
        # ON CONFLICT: a row left by a writer that bypassed the triggers must not fail the mirror's write.
        f"INSERT INTO message_search (id, text) SELECT n.id, {search_text('n')} FROM new_rows n "
        "ON CONFLICT (id) DO UPDATE SET text = excluded.text",
    ),
    "update": (
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"UPDATE message_search s SET text = changed.text FROM (SELECT n.id, {search_text('n')} AS text "
        "FROM new_rows n JOIN old_rows o ON o.id = n.id "
        f"WHERE ({', '.join('n.' + c for c in SEARCHED)}) IS DISTINCT FROM ({', '.join('o.' + c for c in SEARCHED)})"
        ") AS changed WHERE s.id = changed.id",
    ),
    "delete": (
        "REFERENCING OLD TABLE AS old_rows",
        "DELETE FROM message_search s USING old_rows o WHERE s.id = o.id",
    ),
    "truncate": ("", "TRUNCATE message_search"),
}

# SQLite, row by row. The insert deletes first rather than upserting: inside a trigger the outer statement's
# conflict handling (the mirror's upsert) replaces the trigger's own (see 0008).
SQLITE_TRIGGERS = {
    "insert": (
        "AFTER INSERT ON message_queue FOR EACH ROW BEGIN DELETE FROM message_search WHERE id = NEW.id; "
        f"INSERT INTO message_search (id, text) VALUES (NEW.id, {search_text('NEW')}); END"
    ),
    "update": (
        f"AFTER UPDATE OF {', '.join(SEARCHED)} ON message_queue FOR EACH ROW "
        f"WHEN {' OR '.join(f'OLD.{c} IS NOT NEW.{c}' for c in SEARCHED)} "
        f"BEGIN UPDATE message_search SET text = {search_text('NEW')} WHERE id = NEW.id; END"
    ),
    "delete": "AFTER DELETE ON message_queue FOR EACH ROW BEGIN DELETE FROM message_search WHERE id = OLD.id; END",
}

OLD_INDEX = (
    "CREATE INDEX ix_message_queue_search ON message_queue USING gin "
    "((lower(recipient || ' ' || sender || ' ' || coalesce(subject, ''))) gin_trgm_ops)"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "message_search",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_search"),
    )
    # The triggers first: creating one waits for the mirror's writers in flight and keeps new ones out until this
    # transaction commits, so the fill below sees every message once (on SQLite the migration holds the write lock).
    if postgres:
        for operation, (transitions, statement) in PG_FUNCTIONS.items():
            op.execute(
                f"CREATE FUNCTION message_search_on_{operation}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {statement}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER message_search_{operation} AFTER {operation.upper()} ON message_queue "
                f"{transitions} FOR EACH STATEMENT EXECUTE FUNCTION message_search_on_{operation}()"
            )
    else:
        for operation, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER message_search_{operation} {body}")
    op.execute(f"INSERT INTO message_search (id, text) SELECT m.id, {search_text('m')} FROM message_queue m")
    if postgres:
        # After the fill: one index build sorts every entry once, instead of inserting them one by one.
        op.execute("CREATE INDEX ix_message_search_text ON message_search USING gin (text gin_trgm_ops)")
        op.execute("DROP INDEX IF EXISTS ix_message_queue_search")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    operations = PG_FUNCTIONS if postgres else SQLITE_TRIGGERS
    for operation in operations:
        op.execute(f"DROP TRIGGER IF EXISTS message_search_{operation}" + (" ON message_queue" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS message_search_on_{operation}()")
    op.drop_table("message_search")
    if postgres:
        op.execute(OLD_INDEX)
