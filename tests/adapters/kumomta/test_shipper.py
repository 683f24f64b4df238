"""The KumoMTA log shipper against the real app served on 127.0.0.1: every record kumod logged is stored once,
whatever mtactl answers in between and wherever the shipper stops."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from sqlalchemy import func, select

from adapters.kumomta.segments import Checkpoint, Position
from adapters.kumomta.shipper import Shipper, ingest_endpoint
from controlplane.db.tables import DeadLetterRow, EventRow
from controlplane.services import Services
from tests.controlplane.api_client import served
from tests.support import load_fixture

RECEPTION = load_fixture("kumomta/log_reception.json")
DELIVERY = load_fixture("kumomta/log_delivery.json")


def records(first: int, count: int) -> list[dict[str, Any]]:
    """``count`` distinct records: the fixture Reception and Delivery of message ``first``, ``first + 1``…"""
    made = []
    for n in range(first, first + count):
        record = copy.deepcopy(RECEPTION if n % 2 == 0 else DELIVERY)
        record["id"] = f"{n // 2:032x}"
        record["recipient"] = f"user{n // 2}@gmail.com"
        made.append(record)
    return made


class Segment:
    """A segment as kumod writes one: a zstd stream of JSON lines, visible block by block, read-only once done."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self._file = self.path.open("wb")
        self._stream = zstandard.ZstdCompressor().stream_writer(self._file, closefd=False)

    def write(self, data: bytes) -> Segment:
        self._stream.write(data)
        self._stream.flush(zstandard.FLUSH_BLOCK)
        self._file.flush()
        return self

    def log(self, logged: list[dict[str, Any]]) -> Segment:
        return self.write(b"".join(json.dumps(record).encode() + b"\n" for record in logged))

    def finish(self) -> None:
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._file.close()
        self.path.chmod(0o444)

    def abandon(self) -> None:
        """kumod killed mid-write: the stream never ends; its next start marks the segment done."""
        self._file.close()
        self.path.chmod(0o444)


def segments(directory: Path, *sizes: int) -> int:
    """Finished segments of these many records each, named as kumod names them; the total."""
    first = 0
    for index, size in enumerate(sizes):
        Segment(directory, f"20261123-08{index:02d}00.000000000").log(records(first, size)).finish()
        first += size
    return first


class Mtactl(httpx.AsyncBaseTransport):
    """The way to mtactl, with faults scripted per request: a status answered instead of mtactl, or "crash"
    (mtactl answers, then the shipper dies before it can record the answer)."""

    def __init__(self, checkpoint: Checkpoint, *script: int | str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.script = list(script)
        self.bodies: list[bytes] = []
        self.checkpoints: list[Position | None] = []  # the checkpoint as each request went out
        self.checkpoint = checkpoint

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        self.checkpoints.append(self.checkpoint.load())
        fault = self.script.pop(0) if self.script else None
        if isinstance(fault, int):
            return httpx.Response(fault, json={"error": "database_unavailable", "message": "away", "field": None})
        response = await self.inner.handle_async_request(request)
        if fault == "crash":
            await response.aread()
            raise Crashed
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class Crashed(Exception):
    pass


async def stored(services: Services, table: type = EventRow) -> int:
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
async def ingest_key(services: Services) -> str:
    return (await services.keys.create(name="kumo-1", scopes=["events:ingest"])).key


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "kumo-logs"
    directory.mkdir()
    yield directory


def shipper(url: str, key: str, directory: Path, transport: Mtactl, **options: Any) -> Shipper:
    client = httpx.AsyncClient(transport=transport)
    options = {"batch_size": 1000, "backoff": 0.01, "poll": 0.02, "latency": 0.05} | options
    return Shipper(directory, ingest_endpoint(url), key, client, transport.checkpoint, **options)


def checkpoint_of(directory: Path) -> Checkpoint:
    return Checkpoint(directory / ".mtactl-shipper")


async def test_every_record_of_every_segment_is_stored_once_and_a_rerun_sends_nothing(
    services: Services, ingest_key: str, logs: Path
) -> None:
    total = segments(logs, 1500, 700, 1300)
    async with served(services.settings) as url:
        transport = Mtactl(checkpoint_of(logs))
        stats = await shipper(url, ingest_key, logs, transport).run(follow=False)
        assert (stats.records, stats.accepted, stats.duplicates, stats.rejected) == (total, total, 0, 0)
        assert [len(json.loads(body)) for body in transport.bodies] == [1000, 1000, 1000, 500]  # across segments
        assert checkpoint_of(logs).load() == Position("20261123-080200.000000000", 1300, complete=True)

        again = Mtactl(checkpoint_of(logs))
        assert (await shipper(url, ingest_key, logs, again).run(follow=False)).records == 0
        assert again.bodies == []
    assert await stored(services) == total


async def test_a_batch_answered_503_is_sent_again_unchanged_and_the_checkpoint_waits_for_the_202(
    services: Services, ingest_key: str, logs: Path
) -> None:
    total = segments(logs, 1200)
    async with served(services.settings) as url:
        transport = Mtactl(checkpoint_of(logs), 503, 503)
        stats = await shipper(url, ingest_key, logs, transport).run(follow=False)
    assert transport.bodies[0] == transport.bodies[1] == transport.bodies[2]
    assert transport.checkpoints[:3] == [None, None, None] and stats.retries == 2
    assert transport.checkpoints[3] == Position("20261123-080000.000000000", 1000)
    assert (stats.accepted, stats.duplicates) == (total, 0)
    assert await stored(services) == total


async def test_a_crash_between_the_202_and_the_checkpoint_sends_the_batch_again_as_duplicates(
    services: Services, ingest_key: str, logs: Path
) -> None:
    total = segments(logs, 1500)
    async with served(services.settings) as url:
        with pytest.raises(Crashed):
            await shipper(url, ingest_key, logs, Mtactl(checkpoint_of(logs), "crash")).run(follow=False)
        assert checkpoint_of(logs).load() is None and await stored(services) == 1000

        stats = await shipper(url, ingest_key, logs, Mtactl(checkpoint_of(logs))).run(follow=False)
    assert (stats.records, stats.duplicates, stats.accepted) == (total, 1000, total - 1000)
    assert await stored(services) == total


async def test_a_segment_being_written_is_followed_and_its_unfinished_last_line_waits_for_its_end(
    services: Services, ingest_key: str, logs: Path
) -> None:
    logged = records(0, 30)
    lines = [json.dumps(record).encode() + b"\n" for record in logged]
    async with served(services.settings) as url:
        running = shipper(url, ingest_key, logs, Mtactl(checkpoint_of(logs)))
        task = asyncio.create_task(running.run(follow=True))
        writing = Segment(logs, "20261123-080000.000000000").write(b"".join(lines[:10]) + lines[10][:40])
        await until(lambda: running.stats.records == 10)
        writing.write(lines[10][40:] + b"".join(lines[11:20]))
        await until(lambda: running.stats.records == 20)
        writing.finish()
        Segment(logs, "20261123-080100.000000000").log(logged[20:]).finish()
        await until(lambda: running.stats.records == 30)
        running.stop()
        stats = await asyncio.wait_for(task, 10)
    assert (stats.accepted, stats.rejected) == (30, 0)
    assert stats.position == checkpoint_of(logs).load() == Position("20261123-080100.000000000", 10, complete=True)
    assert await stored(services) == 30 and await stored(services, DeadLetterRow) == 0


async def test_an_unfinished_last_line_of_a_segment_kumod_marked_done_is_left_and_the_next_segment_read(
    services: Services, ingest_key: str, logs: Path
) -> None:
    lines = [json.dumps(record).encode() + b"\n" for record in records(0, 6)]
    Segment(logs, "20261123-080000.000000000").write(b"".join(lines[:4]) + lines[4][:25]).abandon()
    Segment(logs, "20261123-080100.000000000").write(lines[5]).finish()
    async with served(services.settings) as url:
        stats = await shipper(url, ingest_key, logs, Mtactl(checkpoint_of(logs))).run(follow=False)
    assert (stats.accepted, stats.rejected) == (5, 0)
    assert await stored(services, DeadLetterRow) == 0


async def test_a_line_that_is_not_json_is_refused_alone_into_the_dead_letters(
    services: Services, ingest_key: str, logs: Path
) -> None:
    lines = [json.dumps(record).encode() + b"\n" for record in records(0, 4)]
    Segment(logs, "20261123-080000.000000000").write(b"".join(lines[:2]) + b"time,type,id\n" + b"".join(lines[2:]))
    async with served(services.settings) as url:
        stats = await shipper(url, ingest_key, logs, Mtactl(checkpoint_of(logs))).run(follow=False)
    assert (stats.accepted, stats.rejected) == (4, 1)
    assert await stored(services, DeadLetterRow) == 1


async def mtactl_ship(directory: Path, url: str, key: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controlplane.cli",
        "ship",
        "kumomta-logs",
        str(directory),
        "--url",
        url,
        "--once",
        env={**os.environ, "MTACTL_SHIP_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_the_command_ships_a_directory_and_prints_what_mtactl_took(
    services: Services, ingest_key: str, logs: Path
) -> None:
    total = segments(logs, 300, 200)
    async with served(services.settings) as url:
        status, out, err = await mtactl_ship(logs, url, ingest_key)
    assert status == 0, err
    assert json.loads(out)["accepted"] == total and ingest_key not in out + err
    assert await stored(services) == total


async def test_an_unknown_key_stops_the_command_with_a_clear_message_that_does_not_show_the_key(
    services: Services, logs: Path
) -> None:
    segments(logs, 10)
    key = "mq_live_" + "x" * 40
    async with served(services.settings) as url:
        status, out, err = await mtactl_ship(logs, url, key)
    assert status == 1 and out == ""
    assert "mtactl refused the batch (401" in err and "MTACTL_SHIP_KEY is unknown or revoked" in err
    assert key not in err and checkpoint_of(logs).load() is None


async def until(condition: Any) -> None:
    async with asyncio.timeout(20):
        # The shipper's counters have no event to wait on; polling them is what an operator's view does too.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
