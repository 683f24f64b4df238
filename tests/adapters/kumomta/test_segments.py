"""Reading kumod's segment directory: which files are segments, in which order, and the checkpoint file."""

from __future__ import annotations

import os
from pathlib import Path

import zstandard

from adapters.kumomta.segments import Checkpoint, Chunk, LogCursor, Position, segment_is_done, segment_names


def test_segments_are_read_in_name_order_and_dot_files_are_not_segments(tmp_path: Path) -> None:
    for name in ("20261123-080100.5", "20261123-080000.25", ".mtactl-shipper", ".kumo-tailer"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "archive").mkdir()
    assert segment_names(tmp_path, None) == ["20261123-080000.25", "20261123-080100.5"]
    assert segment_names(tmp_path, Position("20261123-080000.25", 3)) == ["20261123-080000.25", "20261123-080100.5"]
    assert segment_names(tmp_path, Position("20261123-080000.25", 3, complete=True)) == ["20261123-080100.5"]


def test_a_segment_is_done_once_no_one_may_write_it(tmp_path: Path) -> None:
    segment = tmp_path / "20261123-080000.0"
    segment.write_bytes(b"")
    assert not segment_is_done(segment)
    segment.chmod(0o444)
    assert segment_is_done(segment)


def test_a_cursor_resumed_at_a_position_skips_the_lines_before_it_across_frames(tmp_path: Path) -> None:
    compressor = zstandard.ZstdCompressor()
    lines = [b'{"n": %d}' % n for n in range(7)]
    # Two frames in one file: a stream restarted by its writer is still one segment.
    data = compressor.compress(b"\n".join(lines[:3]) + b"\n") + compressor.compress(b"\n".join(lines[3:]) + b"\n")
    (tmp_path / "20261123-080000.0").write_bytes(data)
    (tmp_path / "20261123-080000.0").chmod(0o444)
    chunk = Chunk()
    cursor = LogCursor(tmp_path, Position("20261123-080000.0", 2))
    assert cursor.read(chunk, max_lines=100, max_bytes=1 << 20) is False
    assert chunk.lines == lines[2:] and chunk.origins[0] == ("20261123-080000.0", 3)
    assert cursor.position == Position("20261123-080000.0", 7, complete=True)


def test_the_checkpoint_is_replaced_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path / ".mtactl-shipper")
    assert checkpoint.load() is None
    checkpoint.save(Position("20261123-080000.0", 5000))
    checkpoint.save(Position("20261123-080000.0", 10000))
    assert checkpoint.load() == Position("20261123-080000.0", 10000)
    assert os.listdir(tmp_path) == [".mtactl-shipper"]
