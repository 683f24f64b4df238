"""Issue 9, item 8: the spool is replayed several files per transaction, exactly once, and a file is removed only
after its records are committed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.kumomta.log_source import KUMOMTA
from controlplane.db.engine import create_engine, session_factory
from controlplane.db.tables import EventRow
from controlplane.events import service as ingest_service
from controlplane.events.service import IngestPipeline, _to_spool, decode_body
from controlplane.events.spool import Spool
from controlplane.services import Services
from controlplane.settings import Settings
from tests.controlplane.events.test_durability import CLOSED_PORT_URL
from tests.controlplane.events.test_hostile_records import record


async def count(services: Services, table: type) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def spool_files(directory: Path, files: int, per_file: int) -> Spool:
    spool = Spool(directory)
    for _ in range(files):
        records, dead, _ = decode_body(
            json.dumps([record() for _ in range(per_file)] + [{}]).encode(), source=KUMOMTA, api_key="k", tenant=None
        )
        spool.write(_to_spool(records, dead))
    return spool


def count_transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    real = ingest_service.write_group
    groups: list[int] = []

    async def write_group(session: Any, records: Any, dead: Any) -> Any:
        groups.append(len(records))
        return await real(session, records, dead)

    monkeypatch.setattr(ingest_service, "write_group", write_group)
    return groups


@pytest.mark.parametrize(("max_batch", "transactions"), [(1000, [15]), (6, [6, 6, 3])])
async def test_the_spool_is_replayed_several_files_per_transaction(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_batch: int, transactions: list[int]
) -> None:
    spool = spool_files(tmp_path / "spool", files=5, per_file=3)
    groups = count_transactions(monkeypatch)
    writers = 1 if services.settings.is_sqlite else 2  # as Services.start chooses
    assert await IngestPipeline(services.sessions, spool.directory, max_batch, writers).replay_pending() == 5
    assert sorted(groups) == sorted(transactions)
    assert spool.pending() == []
    assert await count(services, EventRow) == 15


async def test_replaying_the_same_records_again_stores_nothing_twice(services: Services, tmp_path: Path) -> None:
    spool = spool_files(tmp_path / "spool", files=3, per_file=4)
    copies = tmp_path / "copies"
    shutil.copytree(spool.directory, copies)
    await IngestPipeline(services.sessions, spool.directory, 1000).replay_pending()
    # As after a crash between the commit and the removal: the same files come back.
    for path in copies.glob("*.spool"):
        shutil.copy(path, spool.directory / path.name)
    await IngestPipeline(services.sessions, spool.directory, 1000).replay_pending()
    assert spool.pending() == []
    assert await count(services, EventRow) == 12


async def test_no_file_is_removed_while_the_database_is_away(tmp_path: Path) -> None:
    spool = spool_files(tmp_path / "spool", files=3, per_file=2)
    before = spool.pending()
    unreachable = create_engine(Settings(database_url=CLOSED_PORT_URL))
    try:
        with pytest.raises(OSError):
            await IngestPipeline(session_factory(unreachable), spool.directory, 1000).replay_pending()
    finally:
        await unreachable.dispose()
    assert spool.pending() == before
