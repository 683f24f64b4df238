"""Reading kumod's local log segments: zstd-compressed JSONL files in one directory, oldest name first.

Facts relied on (fixtures/kumomta/README.md, "Local log segments", has the sources): kumod names each segment
by its UTC creation time (``YYYYMMDD-HHMMSS.fraction``, plus an optional per-record suffix), so name order is
write order; it writes one JSON record per line into one zstd stream; it clears every write bit of a segment
once it will not write to it again (also at start-up, for segments a previous run left open); dot-files in the
directory are not segments (kumod's own tailer keeps its checkpoint there as ``.name``).

A ``Position`` (file name, lines consumed, whether the file was complete) says how far a reader got; lines are
counted, not bytes, because a zstd stream cannot be resumed mid-way: a reader re-opened on a file decompresses
it from the start and skips the lines already taken.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec
import zstandard

log = logging.getLogger("mtactl.shipper")

# Compressed bytes read at a time: JSONL compresses about tenfold, so a read yields a few MB of lines at most.
READ_SIZE = 256 * 1024


class Position(msgspec.Struct, frozen=True):
    """``line`` lines of segment ``file`` (a name in the directory) and every segment named before it are done.
    ``complete``: the segment was whole when its last line was taken, so it need not be opened again."""

    file: str
    line: int = 0
    complete: bool = False


def segment_is_done(path: Path) -> bool:
    """kumod clears every write bit of a segment it has finished (Rust's ``set_readonly``)."""
    return stat.S_IMODE(path.stat().st_mode) & 0o222 == 0


def segment_names(directory: Path, after: Position | None) -> list[str]:
    """Segments not yet finished by ``after``, oldest first."""
    names = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            if after is not None and (entry.name < after.file or (entry.name == after.file and after.complete)):
                continue
            names.append(entry.name)
    return sorted(names)


class SegmentReader:
    """The complete lines of one segment, decompressed as they become available (the file may still grow)."""

    def __init__(self, path: Path, skip: int = 0) -> None:
        self.path = path
        self.line = 0  # lines handed out or skipped so far
        self._skip = skip
        self._file: BinaryIO = path.open("rb")
        self._decompressor = zstandard.ZstdDecompressor()
        # One stream per segment as kumod writes it; several frames (e.g. a writer that restarted) read on.
        self._stream = self._decompressor.decompressobj(read_across_frames=True)
        self._partial = b""
        self._lines: deque[bytes] = deque()

    def close(self) -> None:
        self._file.close()

    @property
    def has_partial_line(self) -> bool:
        return bool(self._partial)

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` complete lines (without their newline), fewer if the file holds no more yet."""
        while len(self._lines) < limit and self._read():
            pass
        taken = [self._lines.popleft() for _ in range(min(limit, len(self._lines)))]
        self.line += len(taken)
        return taken

    def _read(self) -> bool:
        chunk = self._file.read(READ_SIZE)
        if not chunk:
            return False
        data = self._partial + self._stream.decompress(chunk)
        *lines, self._partial = data.split(b"\n")  # the last piece has no newline yet
        if self._skip:
            skipped = min(self._skip, len(lines))
            self._skip -= skipped
            self.line += skipped
            lines = lines[skipped:]
        self._lines.extend(lines)
        return True


@dataclass
class Chunk:
    """Lines read by ``LogCursor.read`` and where they came from (for naming a rejected record)."""

    lines: list[bytes] = field(default_factory=list)
    origins: list[tuple[str, int]] = field(default_factory=list)  # (segment, line number from 1)
    bytes: int = 0


class LogCursor:
    """Reads the segments of a directory in order, from a position on, following the one still being written."""

    def __init__(self, directory: Path, start: Position | None) -> None:
        self.directory = directory
        self.position = start
        self._reader: SegmentReader | None = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def read(self, into: Chunk, max_lines: int, max_bytes: int) -> bool:
        """Add complete lines to ``into`` until it holds ``max_lines`` or about ``max_bytes``; empty lines are
        passed over. True when it is full, False when nothing more can be read now (the newest segment is still
        being written, or there is none)."""
        while len(into.lines) < max_lines and into.bytes < max_bytes:
            reader = self._reader or self._open_next()
            if reader is None:
                return False
            # Checked before reading to the end: a segment seen done then read to EOF is whole.
            done = segment_is_done(reader.path)
            lines = reader.take(min(max_lines - len(into.lines), 1000))
            # Counted after the take: it may also have passed over the lines a resumed position skips.
            for number, line in enumerate(lines, start=reader.line - len(lines) + 1):
                if line.strip():
                    into.lines.append(line)
                    into.origins.append((reader.path.name, number))
                    into.bytes += len(line) + 1
            self.position = Position(reader.path.name, reader.line)
            if lines:
                continue
            if not done:
                return False
            if reader.has_partial_line:
                # kumod killed mid-write: its next start marks the segment done with an unfinished last line,
                # which will never be completed (kumod's own tailer drops it too).
                log.warning(
                    "%s ends with an unfinished line (the writer stopped mid-record); it is not shipped", reader.path
                )
            self.position = Position(reader.path.name, reader.line, complete=True)
            reader.close()
            self._reader = None
        return True

    def _open_next(self) -> SegmentReader | None:
        names = segment_names(self.directory, self.position)
        if not names:
            return None
        name = names[0]
        skip = self.position.line if self.position is not None and self.position.file == name else 0
        try:
            self._reader = SegmentReader(self.directory / name, skip)
        except FileNotFoundError:  # removed by log clean-up between listing and opening
            return None
        return self._reader


class Checkpoint:
    """A position kept in a small JSON file, replaced atomically (temp file, fsync, rename, fsync of the folder),
    so that a crash leaves either the old position or the new one, never a torn file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Position | None:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Position)
        except FileNotFoundError:
            return None
        except msgspec.DecodeError as exc:
            raise ValueError(f"checkpoint {self.path} is unreadable ({exc}); fix or remove it") from None

    def save(self, position: Position) -> None:
        folder = self.path.parent
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(msgspec.json.encode(position))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a power loss
        finally:
            os.close(directory)
