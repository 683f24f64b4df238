"""The mtactl command line, run as an operator would: a real process, settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from adapters.kumomta.log_source import KUMOMTA
from controlplane.auth.schema import Principal, Scope
from controlplane.auth.service import VerifiedKeys, digest
from controlplane.events.service import decode_body, write_group
from controlplane.services import Services
from controlplane.settings import Settings
from tests.conftest import POSTGRES_DSN
from tests.fake_kumod import FakeKumod, serving
from tests.fake_zonemta import FakeZoneMta
from tests.pg_faults import PostgresProxy
from tests.support import fixture_path, kumomta_fixture_counts, kumomta_records


def mtactl(tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MTACTL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", **(extra_env or {})}
    env.pop("MTACTL_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_create_prints_the_key_alone_on_stdout(tmp_path: Path) -> None:
    result = mtactl(tmp_path, "keys", "create", "--name", "reader", "--scopes", "email:read", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("mq_live_")
    listed = mtactl(tmp_path, "keys", "list", "--json")
    keys = json.loads(listed.stdout)
    assert [(k["name"], k["scopes"], k["tenant_id"]) for k in keys] == [("reader", ["email:read"], "acme")]
    assert result.stdout.strip() not in listed.stdout
    assert mtactl(tmp_path, "keys", "revoke", "reader").returncode == 0
    assert json.loads(mtactl(tmp_path, "keys", "list", "--json").stdout)[0]["revoked_at"]


def test_a_bad_scope_is_a_clear_error(tmp_path: Path) -> None:
    result = mtactl(tmp_path, "keys", "create", "--name", "x", "--scopes", "everything")
    assert result.returncode != 0 and "unknown scope 'everything'" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("flag", [[], ["--dry-run"]])
def test_legacy_import_reports_counts_and_exits_2_when_rows_were_rejected(tmp_path: Path, flag: list[str]) -> None:
    source = tmp_path / "items.ndjson"
    source.write_text(fixture_path("legacy/mixed_queue_items.ndjson").read_text())
    result = mtactl(tmp_path, "legacy", "import", str(source), *flag)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert (report["valid"], report["rejected"], report["imported"]) == (4, 6, 0 if flag else 4)
    verify = mtactl(tmp_path, "legacy", "verify", str(source))
    assert verify.returncode == (1 if flag else 0)
    assert json.loads(verify.stdout)["file_checksum"] == report["checksum"]
    assert (tmp_path / "items.ndjson.rejects.ndjson").exists() == (not flag)  # a dry run writes no reject report
    if flag:
        assert "row 7 (Q-2003): priority must be at most 10, got 11" in result.stderr


def test_legacy_import_and_verify_take_one_pretty_printed_json_object(tmp_path: Path) -> None:
    source = tmp_path / "item.json"
    source.write_text(fixture_path("legacy/appendix_a_queue_item.json").read_text())
    result = mtactl(tmp_path, "legacy", "import", str(source))
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["imported"], json.loads(result.stdout)["rejected"]) == (1, 0)
    verify = mtactl(tmp_path, "legacy", "verify", str(source))
    assert verify.returncode == 0 and json.loads(verify.stdout)["valid"] == 1


def test_legacy_verify_of_a_file_without_valid_rows_fails(tmp_path: Path) -> None:
    source = tmp_path / "items.ndjson"
    source.write_text("not json\n")
    verify = mtactl(tmp_path, "legacy", "verify", str(source))
    assert verify.returncode == 1 and json.loads(verify.stdout)["ok"] is False
    assert "no valid row" in verify.stderr


def test_a_setting_with_a_bad_value_names_its_variable(tmp_path: Path) -> None:
    env = {**os.environ, "MTACTL_ENABLE_LEGACY_QUEUE_ADAPTER": "perhaps"}
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "keys", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "MTACTL_ENABLE_LEGACY_QUEUE_ADAPTER" in result.stderr


def test_nodes_are_added_listed_and_removed_from_the_cli(tmp_path: Path) -> None:
    import base64

    key = base64.b64encode(b"z" * 32).decode()
    env = {"MTACTL_SECRET_KEY": key}
    added = mtactl(
        tmp_path,
        "nodes",
        "add",
        "--name",
        "kumo-1",
        "--kind",
        "kumomta",
        "--url",
        "http://k1:8000",
        "--token",
        "tkn",
        "--label",
        "region=eu",
        "--tsa-url",
        "http://k1:8008",
        extra_env=env,
    )
    assert added.returncode == 0, added.stderr
    listed = json.loads(mtactl(tmp_path, "nodes", "list", "--json", extra_env=env).stdout)
    assert [(n["name"], n["auth_scheme"], n["labels"], n["tsa_url"]) for n in listed] == [
        ("kumo-1", "bearer", {"region": "eu"}, "http://k1:8008")
    ]
    no_key = mtactl(tmp_path, "nodes", "add", "--name", "k2", "--kind", "kumomta", "--url", "http://k2", "--token", "t")
    assert no_key.returncode != 0 and "MTACTL_SECRET_KEY" in no_key.stderr
    assert mtactl(tmp_path, "nodes", "remove", "kumo-1", extra_env=env).returncode == 0
    assert json.loads(mtactl(tmp_path, "nodes", "list", "--json", extra_env=env).stdout) == []


def test_suspend_queue_summary_resume_and_ops_list_work_like_kcli_across_the_fleet(tmp_path: Path) -> None:
    kumod = FakeKumod({"acme@gmail.com": 25, "acme@yahoo.com": 4})
    with serving(kumod) as url:
        assert mtactl(tmp_path, "nodes", "add", "--name", "kumo-1", "--kind", "kumomta", "--url", url).returncode == 0
        target = ["--domain", "gmail.com", "--tenant", "acme"]

        never = mtactl(tmp_path, "suspend", *target, "--reason", "r", "--dry-run")
        assert "kumo-1: never synced: what it holds is unknown" in never.stdout and "would affect" not in never.stdout
        assert mtactl(tmp_path, "queue-summary", "--refresh").returncode == 0  # reads the node's queue counts
        read = len(kumod.requests)
        planned = mtactl(tmp_path, "suspend", *target, "--reason", "block at gmail", "--duration", "2h", "--dry-run")
        assert planned.returncode == 0, planned.stderr
        assert planned.stdout.startswith("planned: suspend") and len(kumod.requests) == read
        assert "kumo-1: would affect 25 message(s) in 1 queue(s)" in planned.stdout

        done = mtactl(tmp_path, "suspend", *target, "--reason", "block at gmail", "--duration", "2h")
        assert done.returncode == 0, done.stderr
        assert "kumo-1: 25 message(s) in 1 queue(s) ok id=" in done.stdout
        (suspension,) = kumod.suspensions.values()
        assert (suspension["domain"], suspension["tenant"], suspension["reason"]) == (
            "gmail.com",
            "acme",
            "block at gmail",
        )

        summary = mtactl(tmp_path, "queue-summary", "--refresh", "--json")
        queues = {q["queue_name"]: q for q in json.loads(summary.stdout)["data"]}
        assert queues["acme@gmail.com"]["queue_state"] == "suspended" and queues["acme@gmail.com"]["scheduled"] == 25
        assert queues["acme@yahoo.com"]["queue_state"] == "active"
        table = mtactl(tmp_path, "queue-summary").stdout
        assert "acme@gmail.com" in table and "kumo-1=25" in table and "suspended" in table
        assert suspension["id"] in mtactl(tmp_path, "holds").stdout

        assert mtactl(tmp_path, "resume", *target).returncode == 0
        assert kumod.suspensions == {}
        assert mtactl(tmp_path, "retry", "--domain", "yahoo.com").returncode == 0
        bounced = mtactl(tmp_path, "bounce", "--domain", "yahoo.com", "--reason", "bad list")
        assert bounced.returncode == 0 and kumod.scheduled["acme@yahoo.com"] == 0

        listed = mtactl(tmp_path, "ops", "list", "--json")
        operations = [(o["request"]["operation"], o["status"]) for o in json.loads(listed.stdout)]
        assert operations == [
            ("bounce", "done"),
            ("retry", "done"),
            ("resume", "done"),
            ("suspend", "done"),
            ("suspend", "planned"),
            ("suspend", "planned"),
        ]
        assert json.loads(listed.stdout)[0]["actor"].startswith("cli")

        unbounded = mtactl(tmp_path, "suspend", "--reason", "everything?")
        assert unbounded.returncode != 0 and "domain" in unbounded.stderr
        unknown = mtactl(tmp_path, "suspend", "--domain", "x.com", "--reason", "r", "--node", "kumo-9")
        assert unknown.returncode != 0 and "kumo-9" in unknown.stderr


def test_queue_summary_shows_every_page_of_queues_and_the_ready_queues_once(tmp_path: Path) -> None:
    kumod = FakeKumod({f"acme@d{i}.test": i + 1 for i in range(5)})
    kumod.ready = {"d0.test@kumo-egress": 7}
    with serving(kumod) as url:
        assert mtactl(tmp_path, "nodes", "add", "--name", "kumo-1", "--kind", "kumomta", "--url", url).returncode == 0
        table = mtactl(tmp_path, "queue-summary", "--refresh", "--page-size", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == [f"acme@d{i}.test" for i in range(5)]
    assert "kumo-1=5" in lines[5] and sum("d0.test@kumo-egress" in line for line in lines) == 1
    listing = json.loads(mtactl(tmp_path, "queue-summary", "--json", "--page-size", "2").stdout)
    assert [q["scheduled"] for q in listing["data"]] == [1, 2, 3, 4, 5]
    assert [r["ready"] for r in listing["ready_queues"]] == [7]
    assert (listing["cursor"], listing["has_more"]) == (None, False)
    refused = mtactl(tmp_path, "queue-summary", "--page-size", "1001")
    assert refused.returncode == 2 and "--page-size" in refused.stderr


def test_an_operation_that_fails_on_every_node_exits_1(tmp_path: Path) -> None:
    with serving(FakeKumod(fail_with=400)) as url:
        mtactl(tmp_path, "nodes", "add", "--name", "kumo-1", "--kind", "kumomta", "--url", url)
        failed = mtactl(tmp_path, "suspend", "--domain", "gmail.com", "--reason", "r")
    assert failed.returncode == 1 and "FAILED" in failed.stdout


def test_a_zonemta_node_from_the_command_line_shows_its_queues_and_takes_what_it_can(tmp_path: Path) -> None:
    zone = FakeZoneMta()
    zone.add_message(["a@gmail.com", "b@gmail.com"], deferred=2)
    zone.add_message("c@yahoo.com")
    with serving(zone) as url:
        added = mtactl(tmp_path, "nodes", "add", "--name", "zone-1", "--kind", "zonemta", "--url", url)
        assert added.returncode == 0, added.stderr
        summary = mtactl(tmp_path, "queue-summary", "--refresh")
        assert summary.returncode == 0, summary.stderr
        rows = {line.split()[0]: line for line in summary.stdout.splitlines()[1:] if line.strip()}
        assert "zone-1=2" in rows["gmail.com"] and "zone-1=1" in rows["yahoo.com"]

        refused = mtactl(tmp_path, "suspend", "--domain", "gmail.com", "--reason", "r")
        assert refused.returncode == 1 and "no pause API" in refused.stderr and "Traceback" not in refused.stderr

        planned = mtactl(tmp_path, "cancel", "--domain", "gmail.com", "--reason", "bad import", "--dry-run")
        assert "zone-1: would affect 2 message(s) in 1 queue(s)" in planned.stdout, planned.stdout
        cancelled = mtactl(tmp_path, "cancel", "--domain", "gmail.com", "--reason", "bad import")
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert "zone-1: 2 message(s) in 1 queue(s) ok" in cancelled.stdout
    assert [r.recipient for r in zone.rows] == ["c@yahoo.com"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


async def on_postgres(dsn: str, statement: str) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


def test_serve_starts_while_the_database_is_away_spools_and_migrates_when_it_returns(tmp_path: Path) -> None:
    # A fresh, unmigrated database on the local server, reached through a proxy that is down at first.
    name = f"mtactl_degraded_{uuid.uuid4().hex[:12]}"
    asyncio.run(on_postgres(POSTGRES_DSN, f'CREATE DATABASE "{name}"'))
    target = make_url(POSTGRES_DSN.replace("postgresql://", "postgresql+asyncpg://"))
    spool = tmp_path / "spool"
    ingest_key = "mq_live_" + "k" * 40  # verified by an earlier process: remembered beside the spool
    principal = Principal(key_id=uuid.uuid4(), name="mta", scopes=frozenset({Scope.events_ingest}))
    asyncio.run(VerifiedKeys(spool / "verified-keys.json").vouched(digest(ingest_key), principal))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service: subprocess.Popen[str] | None = None
    try:
        with PostgresProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
            proxy.go_down("refused")
            env = {**os.environ, "MTACTL_DATABASE_URL": proxy.url_to(name), "MTACTL_SPOOL_DIR": str(spool)}
            env.pop("MTACTL_REDIS_URL", None)
            service = subprocess.Popen(
                [sys.executable, "-m", "controlplane.cli", "serve", "--port", str(port)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_for(lambda: httpx.get(f"{base}/api/v1/health").status_code == 200, 30, "liveness")
            assert service.poll() is None
            detailed = httpx.get(f"{base}/api/v1/health/detailed")
            assert detailed.status_code == 503 and detailed.json()["status"] == "degraded"
            assert detailed.json()["database"]["status"] == "down"
            posted = httpx.post(
                f"{base}/api/v1/events/ingest/kumomta",
                content=kumomta_records()["log_delivery"],
                headers={"Authorization": f"Bearer {ingest_key}"},
                timeout=30,
            )
            assert posted.status_code == 202 and posted.json()["spooled"] == 1
            proxy.go_up()
            wait_for(lambda: httpx.get(f"{base}/api/v1/health/detailed").json()["database"]["status"] == "ok", 30, "ok")
            wait_for(lambda: httpx.get(f"{base}/api/v1/health/detailed").json()["spooled_files"] == 0, 30, "replay")
        stored = asyncio.run(on_postgres(POSTGRES_DSN.rsplit("/", 1)[0] + f"/{name}", "SELECT count(*) FROM events"))
        assert stored == 1
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        asyncio.run(on_postgres(POSTGRES_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_command_other_than_serve_says_the_database_is_unavailable(tmp_path: Path) -> None:
    closed = {"MTACTL_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"}
    result = mtactl(tmp_path, "keys", "list", extra_env=closed)
    # Only serve waits for the database; any other command says in one line that nothing answers there.
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: MTACTL_DATABASE_URL: nothing answers on 127.0.0.1:1 (connection refused): is PostgreSQL running there?"
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("notaurl", "not a database URL"),
        ("mysql://app@db.internal/mail", "mysql databases are not supported"),
        ("postgresql+psycopg://app@db.internal/mail", "driver psycopg is not installed"),
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/mtactl_no_such_database", "does not exist on 127.0.0.1:5432"),
        ("postgresql+asyncpg://postgres@127.0.0.1:1/mtactl", "nothing answers on 127.0.0.1:1"),
    ],
)
def test_a_wrong_database_url_is_one_line_naming_the_variable(tmp_path: Path, url: str, says: str) -> None:
    result = mtactl(tmp_path, "keys", "list", extra_env={"MTACTL_DATABASE_URL": url})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: MTACTL_DATABASE_URL: ") and says in result.stderr


def test_keys_create_help_lists_every_scope(tmp_path: Path) -> None:
    from controlplane.auth.schema import Scope

    result = mtactl(tmp_path, "keys", "create", "--help")
    listed = " ".join(result.stdout.split())  # click wraps the help text
    assert result.returncode == 0 and all(scope.value in listed for scope in Scope)


def test_revoking_a_revoked_key_says_so(tmp_path: Path) -> None:
    assert mtactl(tmp_path, "keys", "create", "--name", "temp", "--scopes", "email:read").returncode == 0
    assert mtactl(tmp_path, "keys", "revoke", "temp").returncode == 0
    again = mtactl(tmp_path, "keys", "revoke", "temp")
    assert again.returncode == 1 and "'temp'" in again.stderr and "was already revoked at" in again.stderr


@pytest.mark.parametrize(
    ("duration", "says"), [("5parsecs", "unknown unit 'parsecs'"), ("0s", "is zero"), ("forever", "is not a duration")]
)
def test_a_bad_duration_is_a_usage_error_in_words(tmp_path: Path, duration: str, says: str) -> None:
    for verb in ("suspend", "bounce"):
        result = mtactl(tmp_path, verb, "--domain", "gmail.com", "--reason", "r", "--duration", duration)
        assert result.returncode == 2 and "Invalid value for '--duration'" in result.stderr and says in result.stderr
        assert "regex" not in result.stderr


def test_projections_status_shows_the_lag_and_rebuild_replays_the_log(tmp_path: Path) -> None:
    assert mtactl(tmp_path, "db", "upgrade").returncode == 0
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/cli.db", spool_dir=str(tmp_path / "spool"))

    async def append() -> None:
        services = await Services.start(settings)
        try:
            body = b"[" + b",".join(kumomta_records().values()) + b"]"
            records, dead, _ = decode_body(body, source=KUMOMTA, api_key=None, tenant=None)
            async with services.sessions.begin() as session:
                await write_group(session, records, dead)
        finally:
            await services.close()

    asyncio.run(append())
    events, messages = kumomta_fixture_counts()
    behind = json.loads(mtactl(tmp_path, "projections", "status", "--json").stdout)
    assert {p["name"]: (p["applied"], p["events_behind"]) for p in behind} == {
        "mirror": (0, events),
        "rollups": (0, events),
        "policy_matches": (0, events),
        "suppressions": (0, events),
    }
    rebuilt = mtactl(tmp_path, "projections", "rebuild", "mirror")
    assert rebuilt.returncode == 0 and f"mirror rebuilt from {events} events" in rebuilt.stderr
    table = mtactl(tmp_path, "projections", "status").stdout.splitlines()
    assert table[0].split()[:4] == ["PROJECTION", "APPLIED", "BEHIND", "LAG"]
    assert table[1].split()[:3] == ["mirror", str(events), "0"] and table[2].split()[:3] == [
        "rollups",
        "0",
        str(events),
    ]
    unknown = mtactl(tmp_path, "projections", "rebuild", "mirrors")
    assert (
        unknown.returncode == 2
        and "no projection 'mirrors'; there are mirror, policy_matches, rollups, suppressions" in unknown.stderr
    )
    assert messages > 0


def test_serve_refuses_several_processes_without_postgres_and_redis(tmp_path: Path) -> None:
    result = mtactl(tmp_path, "serve", "--workers", "2")
    assert result.returncode == 2 and "--workers above 1 needs Postgres and MTACTL_REDIS_URL" in result.stderr
