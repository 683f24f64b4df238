"""Migration 0015 fills the metrics' counters from the messages already mirrored, and its downgrade drops them."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from controlplane.db.engine import alembic_config
from controlplane.db.messages import insert_new
from controlplane.services import Services
from tests.controlplane.queues.test_metrics import (
    kept_counts,
    kept_depths,
    mirrored,
    recounted_counts,
    recounted_depths,
    varied_messages,
)


async def migrate(services: Services, revision: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with services.engine.begin() as connection:
        await connection.run_sync(run)
    # Pooled connections may hold statements prepared against the tables just dropped and created again.
    await services.engine.dispose()


async def tables(services: Services) -> set[str]:
    def names(connection: Any) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with services.engine.connect() as connection:
        return await connection.run_sync(names)


async def test_upgrading_counts_what_is_mirrored_and_downgrading_drops_the_counters(services: Services) -> None:
    try:
        await migrate(services, "0014", down=True)
        assert not {"metrics_counts", "metrics_depths"} & await tables(services)
        async with services.sessions.begin() as session:  # mirrored before the counters exist
            await insert_new(session, varied_messages(200, seed=3))
    finally:
        await migrate(services, "head")
    messages = await mirrored(services)
    assert await kept_counts(services) == recounted_counts(messages)
    assert await kept_depths(services) == recounted_depths(messages)
    async with services.sessions.begin() as session:  # and the triggers keep them from there
        await insert_new(session, varied_messages(20, seed=4))
    messages = await mirrored(services)
    assert await kept_counts(services) == recounted_counts(messages)
    assert await kept_depths(services) == recounted_depths(messages)
