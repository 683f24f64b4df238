"""mtactl legacy import / verify: validation, reject reports, idempotency and the zero-data-loss checksum."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from adapters.legacy import legacy_message_uuid
from adapters.model import MessageQueueStatus
from controlplane.db.tables import AuditRow, MessageRow
from controlplane.services import Services
from migrations.legacy import import_queue_items
from migrations.legacy.import_queue_items import import_legacy_file, verify_legacy_file
from tests.support import fixture_path


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / Path(name).name
    shutil.copy(fixture_path(name), target)
    return target


async def stored_count(services: Services) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(MessageRow)) or 0)


async def test_a_dry_run_validates_and_reports_but_writes_nothing(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    report = await import_legacy_file(services.sessions, services.audit, source, dry_run=True)
    assert (report.rows, report.valid, report.rejected, report.duplicates_in_file) == (11, 4, 6, 1)
    assert report.imported == 0 and await stored_count(services) == 0
    assert report.reject_report is None and list(tmp_path.iterdir()) == [source]  # no reject report either
    assert [r.row for r in report.first_rejections] == [5, 6, 7, 8, 9, 11]  # the reasons are in the report


async def test_a_dry_run_writes_the_reject_report_only_where_asked(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    wanted = tmp_path / "rejects.ndjson"
    report = await import_legacy_file(services.sessions, services.audit, source, dry_run=True, reject_report=wanted)
    assert report.reject_report == str(wanted) and len(wanted.read_text().splitlines()) == 6
    assert await stored_count(services) == 0


async def test_every_bad_row_lands_in_the_reject_report_with_its_reason(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    report = await import_legacy_file(services.sessions, services.audit, source)
    rejects = [json.loads(line) for line in Path(report.reject_report or "").read_text().splitlines()]
    by_row = {r["row"]: r for r in rejects}
    assert sorted(by_row) == [5, 6, 7, 8, 9, 11]
    assert by_row[5]["error"] == (
        "customerEmail 'not-an-address' is not an e-mail address (local-part@domain, without spaces or angle brackets)"
    )
    assert by_row[6]["error"] == "status 'on-hold' is not one of waiting, in-progress, completed, cancelled"
    assert by_row[7]["error"] == "priority must be at most 10, got 11"
    assert by_row[8]["error"] == (
        "createdAt '2025-10-03 08:00' is not an ISO-8601 timestamp with a timezone, e.g. 2025-10-01T09:00:00Z"
    )
    assert "not JSON" in by_row[9]["error"]
    assert "different content" in by_row[11]["error"] and by_row[11]["id"] == "Q-1003"
    assert by_row[5]["raw"]["id"] == "Q-2001"  # the original row is kept for repair


async def test_importing_stores_the_valid_rows_with_mapped_statuses(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    report = await import_legacy_file(services.sessions, services.audit, source)
    assert report.imported == 4 and await stored_count(services) == 4
    ann = await services.queues.get_message(legacy_message_uuid("Q-1001"))
    assert ann.status is MessageQueueStatus.ready and ann.tenant_id == "acme"
    assert ann.recipient == "ann@example.com" and ann.domain == "example.com"  # the domain is lower-cased
    bob = await services.queues.get_message(legacy_message_uuid("Q-1002"))
    assert bob.status is MessageQueueStatus.delivered and bob.delivered_at is not None
    carol = await services.queues.get_message(legacy_message_uuid("Q-1003"))
    assert carol.status is MessageQueueStatus.in_delivery


async def test_running_the_same_file_again_imports_nothing_twice(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    first = await import_legacy_file(services.sessions, services.audit, source)
    second = await import_legacy_file(services.sessions, services.audit, source)
    assert (first.imported, first.already_present) == (4, 0)
    assert (second.imported, second.already_present) == (0, 4)
    assert first.checksum == second.checksum
    assert await stored_count(services) == 4
    async with services.sessions() as session:
        audits = await session.scalar(select(func.count()).where(AuditRow.action == "legacy.import"))
    assert audits == 2


async def test_verify_recomputes_the_import_checksum_from_the_database(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    imported = await import_legacy_file(services.sessions, services.audit, source)
    verified = await verify_legacy_file(services.sessions, source)
    assert verified.ok and verified.valid == 4
    assert verified.file_checksum == verified.database_checksum == imported.checksum


async def test_verify_catches_a_changed_and_a_missing_row(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    await import_legacy_file(services.sessions, services.audit, source)
    async with services.sessions.begin() as session:
        await session.execute(
            update(MessageRow).where(MessageRow.id == legacy_message_uuid("Q-1001")).values(priority=9)
        )
        await session.execute(MessageRow.__table__.delete().where(MessageRow.id == legacy_message_uuid("Q-1004")))
    verified = await verify_legacy_file(services.sessions, source)
    assert not verified.ok
    assert verified.mismatched == ["Q-1001"] and verified.missing == ["Q-1004"]
    assert verified.file_checksum != verified.database_checksum


async def test_csv_and_json_array_files_import_too(services: Services, tmp_path: Path) -> None:
    csv_file = copy_fixture("legacy/queue_items.csv", tmp_path)
    report = await import_legacy_file(services.sessions, services.audit, csv_file)
    assert (report.format, report.valid, report.rejected) == ("csv", 2, 1)
    ann = await services.queues.get_message(legacy_message_uuid("C-1"))
    assert ann.metadata is not None and ann.metadata["notes"] == "needs, commas"
    assert ann.metadata["legacy"]["notificationsSent"] == ["email"]
    assert (await verify_legacy_file(services.sessions, csv_file)).ok

    json_file = copy_fixture("legacy/appendix_a_queue_item.json", tmp_path)
    json_file.write_text(json.dumps([json.loads(json_file.read_text())]))
    report = await import_legacy_file(services.sessions, services.audit, json_file)
    assert (report.format, report.imported) == ("json", 1)
    assert (await verify_legacy_file(services.sessions, json_file)).ok


async def test_rejections_say_what_is_wrong_in_words_not_in_schema_terms(services: Services, tmp_path: Path) -> None:
    base = {"id": "R-1", "customerEmail": "r@example.com", "status": "waiting", "createdAt": "2025-10-01T09:00:00Z"}
    rows = [
        {**base, "createdAt": "2025-10-01T09:00:00"},
        {k: v for k, v in base.items() if k != "customerEmail"},
        {**base, "priority": "high"},
        {**base, "colour": "blue"},
        {**base, "customerId": "c" * 101},
        [1, 2],
    ]
    source = tmp_path / "rows.ndjson"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = await import_legacy_file(services.sessions, services.audit, source, dry_run=True)
    assert [r.error for r in report.first_rejections] == [
        "createdAt '2025-10-01T09:00:00' has no timezone: add Z (UTC) or an offset such as +02:00",
        "customerEmail is missing (it is required)",
        "priority must be a whole number, not a string ('high')",
        "unknown field 'colour' (not a QueueItem field; misspelt?)",
        "customerId is longer than 100 characters (as the message's tenant_id)",
        "the row is a list, not a QueueItem object",
    ]
    assert not any("regex" in r.error or "`" in r.error for r in report.first_rejections)


async def test_a_single_pretty_printed_json_object_imports_as_one_item(services: Services, tmp_path: Path) -> None:
    source = copy_fixture("legacy/appendix_a_queue_item.json", tmp_path)  # one object over 15 lines
    report = await import_legacy_file(services.sessions, services.audit, source)
    assert (report.format, report.rows, report.valid, report.rejected, report.imported) == ("json", 1, 1, 0, 1)
    verified = await verify_legacy_file(services.sessions, source)
    assert verified.ok and verified.valid == 1


async def test_verify_of_a_file_without_one_valid_row_is_not_a_success(services: Services, tmp_path: Path) -> None:
    source = tmp_path / "broken.ndjson"
    source.write_text('{"id": "B-1"}\nnot json\n')
    verified = await verify_legacy_file(services.sessions, source)
    assert (verified.rows, verified.valid, verified.ok) == (2, 0, False)


async def test_a_re_run_looks_rows_up_instead_of_inserting_them_again(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = copy_fixture("legacy/mixed_queue_items.ndjson", tmp_path)
    await import_legacy_file(services.sessions, services.audit, source)
    inserts: list[int] = []
    real_insert = import_queue_items.insert_new

    async def counting_insert(session: Any, messages: Any) -> Any:
        inserts.append(len(messages))
        return await real_insert(session, messages)

    monkeypatch.setattr(import_queue_items, "insert_new", counting_insert)
    again = await import_legacy_file(services.sessions, services.audit, source)
    assert (again.imported, again.already_present, inserts) == (0, 4, [])  # bench/legacy_import.py: 4-6x faster


async def test_an_import_of_several_batches_stores_and_verifies_every_row(services: Services, tmp_path: Path) -> None:
    rows = [
        {"id": f"B-{n}", "customerEmail": f"u{n}@example.com", "status": "waiting", "createdAt": "2025-10-01T09:00:00Z"}
        for n in range(2 * import_queue_items.BATCH_SIZE + 7)
    ]
    source = tmp_path / "many.ndjson"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = await import_legacy_file(services.sessions, services.audit, source)
    assert (report.imported, await stored_count(services)) == (len(rows), len(rows))
    assert (await verify_legacy_file(services.sessions, source)).ok
