"""Alembic environment. mtactl passes an open connection in (``upgrade_database``); nothing is read from alembic.ini."""

from __future__ import annotations

from alembic import context

from controlplane.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `mtactl db upgrade` (or controlplane.db.engine.upgrade_database)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
