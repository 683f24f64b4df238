"""A durable local spool for accepted records while the database cannot take them.

Each spooled group is one file, written to a temporary name, fsynced and renamed, so a file that exists is
complete. Replay feeds the files back through the normal write path; because event writes are idempotent, a crash
between a replayed commit and the file's removal only replays duplicates.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import msgspec


class SpooledRecord(msgspec.Struct, array_like=True):
    payload: str
    api_key: str | None
    tenant: str | None = None  # the tenant of a tenant-bound key (absent in files written before it was kept)
    source: str | None = None  # the event source that decoded it (absent in older files: the file's ``source``)


class SpooledDeadLetter(msgspec.Struct, array_like=True):
    error: str
    payload: str
    api_key: str | None


class SpoolFile(msgspec.Struct):
    source: str
    records: list[SpooledRecord]
    dead_letters: list[SpooledDeadLetter]


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, content: SpoolFile) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        temporary = self.directory / f".{name}.tmp"
        final = self.directory / f"{name}.spool"
        with temporary.open("wb") as handle:
            handle.write(msgspec.msgpack.encode(content))
            handle.flush()
            os.fsync(handle.fileno())
        temporary.rename(final)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
        return final

    def pending(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob("*.spool"))

    def read(self, path: Path) -> SpoolFile:
        return msgspec.msgpack.decode(path.read_bytes(), type=SpoolFile)
