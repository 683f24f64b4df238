"""The schemathesis gate: the whole OpenAPI schema, every check, on SQLite and on Postgres, against a live
``mtactl serve``; any failure fails the build.

It runs inside a loopback-only network namespace (``fuzz.sh``), since the fuzzer registers nodes with
arbitrary URLs that the sync job and operations then contact. That needs root (CI is root); elsewhere the test
is skipped, unless ``CI`` is set, where a missing ``unshare`` is a failure rather than a silent skip.
Bounded by examples per operation (schemathesis.toml) and a time limit (``LIMIT``); deterministic generation,
so every run tries the same requests.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import POSTGRES_DSN

HERE = Path(__file__).resolve().parent
# One deterministic pass (25 examples per operation, schemathesis.toml) takes about 90 s for both backends on
# the CI machine; past LIMIT the gate fails. MTACTL_FUZZ_MAX_TIME=N fuzzes for N seconds instead (longer local
# sessions: fuzzing and stateful testing then repeat with fresh data until the time is spent).
MAX_TIME = os.environ.get("MTACTL_FUZZ_MAX_TIME")
LIMIT = 300 if MAX_TIME is None else int(MAX_TIME) * 2 + 120
SOCKET_DIR = "/var/run/postgresql"


def _namespace_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare -n"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None:
        return "schemathesis is not installed in this venv (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:  # inside the namespace every port is free; any number will do
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _environment(backend: str, url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTACTL_")}
    env.update(
        BIN=str(Path(sys.executable).parent),
        PYTHONPATH=str(HERE.parent.parent),  # schemathesis.toml loads tests.contract.hooks
        PORT=str(_free_port()),
        CONFIG=str(HERE / "schemathesis.toml"),
        FUZZ_ARGS="--seed 9" + (f" --max-time {MAX_TIME}" if MAX_TIME else ""),
        MTACTL_DATABASE_URL=url,
        MTACTL_SPOOL_DIR=str(workdir / "spool"),
        MTACTL_SECRET_KEY=base64.b64encode(os.urandom(32)).decode(),
        MTACTL_LOG_LEVEL="WARNING",
        MTACTL_SYNC_INTERVAL_SECONDS="2",  # registered nodes are synced (and fail, unreachable) during the run
        MTACTL_OPERATION_WAIT_SECONDS="1",
        HYPOTHESIS_STORAGE_DIRECTORY=str(workdir / "hypothesis"),
    )
    return env


@pytest.mark.postgres
def test_schemathesis_finds_nothing_on_sqlite_and_postgres(tmp_path: Path) -> None:
    """Both backends at once (each in its own namespace, server and database): the gate costs one budget of
    CI time, not two."""
    problem = _namespace_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the schemathesis gate cannot run: {problem}")
        pytest.skip(problem)
    if not Path(SOCKET_DIR).is_dir():
        pytest.fail(f"Postgres has no unix socket in {SOCKET_DIR}: the namespace cannot reach it over TCP")
    database = f"mtactl_fuzz_{uuid.uuid4().hex[:12]}"
    urls = {
        "sqlite": f"sqlite+aiosqlite:///{tmp_path / 'sqlite' / 'fuzz.db'}",
        "postgres": f"postgresql+asyncpg://postgres@/{database}?host={SOCKET_DIR}",
    }
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    runs: dict[str, subprocess.Popen[str]] = {}
    outcome: dict[str, tuple[int, str, float]] = {}
    started = time.monotonic()
    try:
        for backend, url in urls.items():
            workdir = tmp_path / backend
            workdir.mkdir(exist_ok=True)
            runs[backend] = subprocess.Popen(
                ["unshare", "-n", "sh", str(HERE / "fuzz.sh")],
                env=_environment(backend, url, workdir),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=workdir,
            )
        for backend, run in runs.items():
            output, _ = run.communicate(timeout=max(1.0, LIMIT - (time.monotonic() - started)))
            outcome[backend] = (run.returncode, output, time.monotonic() - started)
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    for backend, (_, _, elapsed) in outcome.items():
        print(f"schemathesis gate on {backend}: {elapsed:.0f} s")
    failed = {backend: output for backend, (rc, output, _) in outcome.items() if rc != 0}
    assert not failed, "\n\n".join(f"schemathesis on {b}:\n{out[-20000:]}" for b, out in failed.items())
