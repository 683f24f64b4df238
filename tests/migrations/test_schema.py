"""The migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from controlplane.db.engine import schema_is_current, upgrade_database
from controlplane.db.tables import POSTGRES_ONLY_INDEXES, Base
from controlplane.services import Services


def _declared(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    # Daily partitions of events are created at run time, not declared: leave them (and their indexes) out.
    table = obj.table.name if type_ in ("index", "column", "unique_constraint") else name
    return not re.fullmatch(r"events_(\d{8}|default)", table or "")


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": _declared})
    diff = compare_metadata(context, Base.metadata)
    # Indexes created with raw DDL on Postgres only (trigram search, GIN on tags) are not in the metadata.
    return [d for d in diff if not (d[0] == "remove_index" and d[1].name in POSTGRES_ONLY_INDEXES)]


async def test_migrated_database_matches_the_declared_tables(services: Services) -> None:
    assert await schema_is_current(services.engine)
    async with services.engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_upgrading_again_is_harmless(services: Services) -> None:
    await upgrade_database(services.engine)
    assert await schema_is_current(services.engine)


async def test_every_primary_key_has_the_declared_columns_in_the_declared_order(services: Services) -> None:
    # Autogenerate does not compare primary keys; the order matters (events' key leads with event_at).
    def reflected(connection: Any) -> dict[str, list[str]]:
        inspector = inspect(connection)
        return {name: inspector.get_pk_constraint(name)["constrained_columns"] for name in Base.metadata.tables}

    async with services.engine.connect() as connection:
        keys = await connection.run_sync(reflected)
    declared = {name: [c.name for c in table.primary_key.columns] for name, table in Base.metadata.tables.items()}
    assert keys == declared
    assert keys["events"] == ["event_at", "dedupe_key"]
