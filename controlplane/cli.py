"""The ``mtactl`` command line. Settings come from ``MTACTL_*`` environment variables, as for the service."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from adapters.base import MtaError
from adapters.shippers import SHIP_COMMANDS
from controlplane.auth.schema import Scope
from controlplane.capacity.schema import SourceSpec
from controlplane.db.engine import database_unavailable
from controlplane.errors import MtactlError
from controlplane.projections.service import BACKLOG_CAP
from controlplane.queues.schema import QUEUE_PAGE_MAX, QueueList
from controlplane.services import Services
from controlplane.settings import Settings, SettingsError
from controlplane.suppressions.schema import SuppressionCreate, SuppressionReason
from controlplane.suppressions.service import csv_of, kumomta_list

T = TypeVar("T")


class SettingProblem(click.ClickException):
    """A setting is wrong: one line naming the variable (no traceback, no usage text), exit status 2."""

    exit_code = 2


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SettingProblem(str(exc)) from None


def with_services(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database (migrated first), mapping mtactl errors to CLI errors."""

    async def run() -> T:
        services = await Services.start(load_settings())
        try:
            return await work(services)
        finally:
            await services.close()

    try:
        return asyncio.run(run())
    except SettingsError as exc:  # the database the settings name cannot be reached
        raise SettingProblem(str(exc)) from None
    except MtactlError as exc:
        where = f" ({exc.field})" if exc.field else ""
        raise click.ClickException(f"{exc.message}{where}") from None
    except MtaError as exc:  # refused for what the MTAs can do (e.g. suspend on ZoneMTA only), before any is asked
        field = getattr(exc, "field", None)
        raise click.ClickException(exc.message + (f" ({field})" if field else "")) from None
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        raise click.ClickException(f"the database is unavailable ({type(exc).__name__}: {exc})") from None


def _check_database() -> None:
    """Reach and migrate the database before serving: a wrong URL is one line naming the variable, not a
    traceback. A database that is only away (refusing connections, starting) is waited for by the service."""

    async def run() -> None:
        services = await Services.start(load_settings(), wait_for_database=True)
        await services.close()

    try:
        asyncio.run(run())
    except SettingsError as exc:
        raise SettingProblem(str(exc)) from None


@click.group()
@click.version_option(package_name="mtactl")
def main() -> None:
    """mtactl: control plane for fleets of KumoMTA and ZoneMTA nodes."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Service processes sharing the port. Default: one per core with Postgres and Redis; 1 otherwise.",
)
def serve(host: str, port: int, workers: int | None) -> None:
    """Run the HTTP service (creates and migrates the database on first start).

    It starts even while the database is away: health answers degraded, ingestion spools, and the schema is
    migrated as soon as the database answers."""
    import uvicorn

    from controlplane.app import configure_logging

    settings = load_settings()
    _check_database()
    configure_logging(settings.log_level)
    # Several processes need Postgres (SQLite has one writer) and Redis: without it the periodic jobs (node sync,
    # partitions) and operations run inside the service, and each process would run them, marking another's
    # running operations interrupted when it starts. With both, decoding and answering use every core.
    several = not settings.is_sqlite and settings.redis_url is not None
    if workers is None:
        workers = (os.cpu_count() or 1) if several else 1
    elif workers > 1 and not several:
        raise click.UsageError(
            "--workers above 1 needs Postgres and MTACTL_REDIS_URL (jobs and operations then run on `mtactl "
            "worker`, once); without them they run inside the service, once per process",
            ctx=click.get_current_context(),
        )
    uvicorn.run(
        "controlplane.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@main.command()
@click.option("--burst", is_flag=True, help="Run queued jobs once, then exit.")
def worker(burst: bool) -> None:
    """Run background jobs on a saq worker (needs MTACTL_REDIS_URL)."""
    from controlplane.app import configure_logging
    from controlplane.collector import settle_collector
    from controlplane.jobs.runner import run_worker

    settings = load_settings()
    if not settings.redis_url:
        raise click.UsageError("MTACTL_REDIS_URL is not set: without Redis, jobs run inside `mtactl serve`")
    configure_logging(settings.log_level)

    async def work(services: Services) -> None:
        if not burst:  # a long-running worker: its long-lived state exists now (controlplane.collector)
            settle_collector()
        await run_worker(services, burst=burst)

    with_services(work)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""

    with_services(_noop)
    click.echo("database is at the newest schema", err=True)


async def _noop(_: Services) -> None:
    return None


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--name", required=True)
@click.option(
    "--scopes",
    required=True,
    help=f"Comma-separated, from: {', '.join(s.value for s in Scope)} (admin implies every other)",
)
@click.option("--tenant", default=None, help="Bind the key to one tenant")
def keys_create(name: str, scopes: str, tenant: str | None) -> None:
    """Create a key and print it, alone, on stdout (it is not shown again)."""
    created = with_services(lambda s: s.keys.create(name=name, scopes=scopes.split(","), tenant_id=tenant))
    click.echo(f"created key {created.info.name} ({created.info.key_prefix}…) id={created.info.id}", err=True)
    click.echo(created.key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
def keys_list(as_json: bool) -> None:
    """List keys (never their secrets)."""
    infos = with_services(lambda s: s.keys.list())
    if as_json:
        click.echo(msgspec.json.encode(infos).decode())
        return
    for info in infos:
        state = "revoked" if info.revoked_at else "active"
        scopes = ",".join(info.scopes)
        click.echo(f"{info.id}  {info.key_prefix}…  {info.name}  {scopes}  tenant={info.tenant_id or '-'}  {state}")


@keys.command("revoke")
@click.argument("key_ref")
def keys_revoke(key_ref: str) -> None:
    """Revoke a key by id, prefix or name."""
    info = with_services(lambda s: s.keys.revoke(key_ref))
    click.echo(f"revoked {info.name} ({info.id})")


@main.group()
def nodes() -> None:
    """The fleet registry."""


@nodes.command("add")
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["kumomta", "zonemta"]), required=True)
@click.option("--url", "base_url", required=True, help="e.g. http://kumo-1.internal:8000")
@click.option(
    "--token",
    default=None,
    help="Bearer token for the node's admin API (prefer MTACTL_NODE_TOKEN)",
    envvar="MTACTL_NODE_TOKEN",
)
@click.option("--basic-user", default=None)
@click.option("--basic-password", default=None, envvar="MTACTL_NODE_PASSWORD")
@click.option("--label", "labels", multiple=True, help="key=value, repeatable (e.g. region=eu)")
@click.option("--tsa-url", default=None, help="The node's TSA daemon, e.g. http://kumo-1.internal:8008")
def nodes_add(
    name: str,
    kind: str,
    base_url: str,
    token: str | None,
    basic_user: str | None,
    basic_password: str | None,
    labels: tuple[str, ...],
    tsa_url: str | None,
) -> None:
    """Register a node (credentials are stored encrypted; needs MTACTL_SECRET_KEY)."""
    from controlplane.fleet.schema import NodeCreate

    credentials: dict[str, Any] | None = None
    if token:
        credentials = {"scheme": "bearer", "token": token}
    elif basic_user:
        credentials = {"scheme": "basic", "username": basic_user, "password": basic_password}
    pairs = dict(label.partition("=")[::2] for label in labels)
    try:
        data = msgspec.convert(
            {
                "name": name,
                "kind": kind,
                "base_url": base_url,
                "credentials": credentials,
                "labels": pairs,
                "tsa_url": tsa_url,
            },
            NodeCreate,
        )
    except msgspec.ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    node = with_services(lambda s: s.fleet.create(data, actor="cli"))
    click.echo(f"registered {node.name} ({node.id})")


@nodes.command("list")
@click.option("--json", "as_json", is_flag=True)
def nodes_list(as_json: bool) -> None:
    """Nodes with their last health check (never their credentials)."""
    found = with_services(lambda s: s.fleet.all())
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    for node in found:
        state = {True: "up", False: "down", None: "unchecked"}[node.reachable]
        labels = ",".join(f"{k}={v}" for k, v in node.labels.items()) or "-"
        click.echo(f"{node.id}  {node.name}  {node.kind}  {node.base_url}  {labels}  {state}")


@nodes.command("remove")
@click.argument("node")
def nodes_remove(node: str) -> None:
    """Remove a node by id or name."""
    removed = with_services(lambda s: s.fleet.delete(node, actor="cli"))
    click.echo(f"removed {removed.name} ({removed.id})")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (e.g. a container running as an unnamed uid)
        return "cli"


def _targeting(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say which queues, on which nodes, an operation is for (as kcli's, plus --node)."""
    options = [
        click.option("--domain", default=None, help="Destination domain, e.g. gmail.com"),
        click.option("--tenant", default=None),
        click.option("--campaign", default=None),
        click.option("--routing-domain", default=None),
        click.option("--queue", "queue_name", default=None, help="One scheduled queue by its full name"),
        click.option(
            "--message",
            "message_ids",
            multiple=True,
            help="Instead of queues, one message (mirrored id, or the MTA's message id); repeatable",
        ),
        click.option(
            "--node", "nodes", multiple=True, help="Node id, name or label key=value; repeatable (default: all)"
        ),
        click.option("--dry-run", is_flag=True, help="Say what would be affected; contact no node."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


if TYPE_CHECKING:
    _TextParam = click.ParamType[str]  # generic from click 8.2 on, only to the type checker
else:
    _TextParam = click.ParamType


class _Duration(_TextParam):
    """A hold's duration as kumod reads it (90s, 30m, 2h, 1h 30m, 7days), refused in words before anything runs."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from controlplane.operations.duration import parse_duration

        try:
            parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


DURATION = _Duration()


def _run_operation(operation: str, reason: str, **fields: Any) -> None:
    """Run one operation to its end (in this process) and print the outcome per node.

    Exit status: 0 when every node succeeded (or on a dry run), 2 when some nodes failed, 1 when all did.
    """
    from controlplane.operations.schema import OperationRequest

    body = {k: v for k, v in fields.items() if v not in (None, (), [])}
    body["nodes"] = list(body["nodes"]) if "nodes" in body else None
    if "message_ids" in body:
        body["message_ids"] = list(body["message_ids"])
    try:
        request = msgspec.convert({"operation": operation, "reason": reason, **body}, OperationRequest)
    except msgspec.ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    record = with_services(lambda s: s.operations.submit(request, actor=_actor(), wait=None, run_here=True))
    total = record.total
    if total is not None:
        queues = ", ".join(total.affected_queues) or "none"
        click.echo(
            f"{record.status}: {operation} — mirrored messages still queued: {total.affected_messages} (in {queues})"
        )
    for outcome in record.nodes:
        result = outcome.result
        where = f"{result.affected_messages} message(s) in {len(result.affected_queues)} queue(s)"
        if record.dry_run:
            if outcome.note and outcome.note.startswith("never synced"):
                click.echo(f"  {outcome.node}: {outcome.note}")
            else:
                click.echo(f"  {outcome.node}: would affect {where} (as of its last sync)")
                if outcome.note:
                    click.echo(f"    but {outcome.note}")
            continue
        state = "ok" if result.success else "FAILED: " + "; ".join(result.errors or [])
        reference = f" id={outcome.reference}" if outcome.reference else ""
        click.echo(f"  {outcome.node}: {where} {state}{reference}")
        if outcome.note and result.success:
            click.echo(f"    {outcome.note}")
    click.echo(f"operation {record.id}", err=True)
    if record.status == "partial":
        sys.exit(2)
    if record.status == "failed":
        sys.exit(1)


@main.command("queue-summary")
@click.option("--refresh", is_flag=True, help="Read every node now instead of showing the last sync.")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--page-size",
    type=click.IntRange(1, QUEUE_PAGE_MAX),
    default=QUEUE_PAGE_MAX,
    show_default=True,
    help="Queues read per page (every page is read and shown).",
)
def queue_summary(refresh: bool, as_json: bool, page_size: int) -> None:
    """Queues across the fleet, every page of them: per-node scheduled counts, mirrored messages, suspensions."""

    async def read(services: Services) -> QueueList:
        if refresh:
            for synced in await services.fleet_state.sync():
                if synced.error:
                    click.echo(f"{synced.node}: not read ({synced.error}); showing its last sync", err=True)
        page = await services.queues.list_queues(limit=page_size)
        queues, ready = list(page.data), page.ready_queues  # ready queues come with the first page
        while page.cursor is not None:
            page = await services.queues.list_queues(limit=page_size, cursor=page.cursor)
            queues += page.data
        return QueueList(data=queues, ready_queues=ready, cursor=None, has_more=False)

    listing = with_services(read)
    if as_json:
        click.echo(msgspec.json.encode(listing).decode())
        return
    width = max([len(q.queue_name) for q in listing.data] + [len("QUEUE")])
    click.echo(f"{'QUEUE':<{width}}  {'SCHEDULED':>9}  {'MIRRORED':>8}  STATE      NODES")
    for q in listing.data:
        nodes = " ".join(f"{n.node}={n.scheduled}" for n in q.nodes) or "-"
        state = q.queue_state.value  # which holds: `mtactl holds`
        click.echo(f"{q.queue_name:<{width}}  {q.scheduled:>9}  {q.total:>8}  {state:<10} {nodes}")
    if listing.ready_queues:
        click.echo("")
        click.echo("READY QUEUE (node)  READY  STATE")
        for r in listing.ready_queues:
            click.echo(f"{r.name} ({r.node})  {r.ready}  {r.queue_state.value}")


@main.command()
@_targeting
@click.option("--reason", required=True)
@click.option("--duration", type=DURATION, default=None, help="e.g. 90s, 30m, 2h, 1h 30m, 7days; default: the node's")
def suspend(reason: str, duration: str | None, **target: Any) -> None:
    """Suspend delivery to the target queues on the selected nodes."""
    _run_operation("suspend", reason, duration=duration, **target)


@main.command()
@_targeting
@click.option("--id", "suspension_id", default=None, help="Lift this one suspension (see `mtactl holds`)")
@click.option("--reason", default="resumed from the command line", show_default=True)
def resume(reason: str, suspension_id: str | None, **target: Any) -> None:
    """Lift the suspensions of the target queues (or the one named by --id)."""
    metadata = {"suspension_id": suspension_id} if suspension_id else None
    _run_operation("resume", reason, metadata=metadata, **target)


@main.command()
@_targeting
@click.option("--reason", required=True)
@click.option(
    "--duration", type=DURATION, default=None, help="How long the bounce stands for new messages (default: the node's)"
)
def bounce(reason: str, duration: str | None, **target: Any) -> None:
    """Fail the target queues' messages (and, while the bounce stands, new ones)."""
    _run_operation("bounce", reason, duration=duration, **target)


@main.command()
@_targeting
@click.option("--reason", required=True)
def cancel(reason: str, **target: Any) -> None:
    """Remove the target's queued messages as cancelled by an operator (their records say so)."""
    _run_operation("cancel", reason, **target)


@main.command()
@_targeting
@click.option("--reason", required=True)
def purge(reason: str, **target: Any) -> None:
    """Remove the target's queued messages without a record per message (the mirror is told by mtactl)."""
    _run_operation("purge", reason, **target)


@main.command()
@_targeting
@click.option("--reason", default="retry from the command line", show_default=True)
def retry(reason: str, **target: Any) -> None:
    """Make the target queues' messages due now."""
    _run_operation("retry", reason, **target)


@main.command()
def holds() -> None:
    """Suspensions and standing bounces on every node, as last synced."""
    found = with_services(lambda s: s.fleet_state.holds())
    for hold in found:
        scope = hold.ready_queue or "@".join(filter(None, [hold.tenant, hold.domain])) or "(all)"
        if hold.campaign:
            scope = f"{hold.campaign}:{scope}"
        left = hold.remaining or "-"
        click.echo(f"{hold.kind.value:<10} {hold.id}  {hold.node}  {scope}  left={left}  {hold.reason}")


@main.group()
def ops() -> None:
    """Operations pushed to the fleet."""


@ops.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True)
def ops_list(limit: int, as_json: bool) -> None:
    """Recent operations, newest first."""
    records = with_services(lambda s: s.operations.recent(limit=limit))
    if as_json:
        click.echo(msgspec.json.encode(records).decode())
        return
    for r in records:
        target = r.request.queue_name or "@".join(filter(None, [r.request.tenant, r.request.domain])) or "-"
        progress = "dry run" if r.dry_run else f"{r.progress.nodes_done}/{r.progress.nodes_total} nodes"
        when = r.created_at.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{r.id}  {when}  {r.request.operation.value:<8} {target}  {r.status:<11} {progress}  {r.actor}")


@ops.command("show")
@click.argument("operation_id")
def ops_show(operation_id: str) -> None:
    """One operation with its per-node outcome, as JSON."""
    import uuid

    try:
        ident = uuid.UUID(operation_id)
    except ValueError:
        raise click.UsageError(f"{operation_id!r} is not an operation id") from None
    click.echo(msgspec.json.encode(with_services(lambda s: s.operations.get(ident))).decode())


@main.group()
def legacy() -> None:
    """Move data from the legacy QueueItem model."""


@legacy.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and report; write nothing (but the --report file, if given).")
@click.option("--sender", default="", help="Envelope sender to record (legacy items have none; default: null sender).")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where invalid rows go (default: FILE.rejects.ndjson).",
)
def legacy_import(file: Path, dry_run: bool, sender: str, report_path: Path | None) -> None:
    """Import legacy QueueItems from a JSON array, NDJSON or CSV FILE.

    Exit status: 0 when every row was valid, 2 when some were rejected (see the reject report), 1 on failure.
    """
    from migrations.legacy.import_queue_items import count_rows, detect_format, dump, import_legacy_file

    async def run(services: Services) -> Any:
        total = count_rows(file, detect_format(file))
        with _progress(total) as advance:
            return await import_legacy_file(
                services.sessions,
                services.audit,
                file,
                dry_run=dry_run,
                sender=sender,
                reject_report=report_path,
                progress=advance,
            )

    try:
        report = with_services(run)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(dump(report))
    if report.rejected:
        if report.reject_report:
            click.echo(f"{report.rejected} row(s) rejected; reasons in {report.reject_report}", err=True)
        else:
            click.echo(f"{report.rejected} row(s) would be rejected (--report PATH lists them all):", err=True)
            for rejection in report.first_rejections:
                click.echo(f"  row {rejection.row} ({rejection.id or 'no id'}): {rejection.error}", err=True)
        sys.exit(2)


@legacy.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def legacy_verify(file: Path) -> None:
    """Recompute FILE's import checksum from the database; exit 1 if any item is missing or differs."""
    from migrations.legacy.import_queue_items import dump, verify_legacy_file

    try:
        report = with_services(lambda s: verify_legacy_file(s.sessions, file))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(dump(report))
    if report.valid == 0:
        click.echo(f"{file} has no valid row ({report.rows} in all): nothing to verify", err=True)
    if not report.ok:
        sys.exit(1)


@main.group()
def projections() -> None:
    """What follows the event log: the message mirror and the per-minute rollups."""


@projections.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def projections_status(as_json: bool) -> None:
    """Each projection's checkpoint and lag (events behind, seconds)."""
    statuses = with_services(lambda s: s.projections.status())
    if as_json:
        click.echo(msgspec.json.encode(statuses))
        return
    click.echo(f"{'PROJECTION':<12} {'APPLIED':>12} {'BEHIND':>10} {'LAG S':>8}  CHECKPOINT MOVED")
    for status in statuses:
        moved = status.checkpoint_at.isoformat(timespec="seconds") if status.checkpoint_at else "never"
        behind = f"{status.events_behind:,}" + ("+" if status.events_behind >= BACKLOG_CAP else "")
        click.echo(f"{status.name:<12} {status.applied:>12,} {behind:>10} {status.lag_seconds:>8.1f}  {moved}")


@projections.command("rebuild")
@click.argument("name")
def projections_rebuild(name: str) -> None:
    """Replay the whole event log into a fresh NAME (mirror, rollups) and swap it in at once.

    Readers see the old projection until the new one is complete; the live runner waits meanwhile."""

    async def rebuild(services: Services) -> int:
        if name not in services.projections.projections:
            known = ", ".join(sorted(services.projections.projections))
            raise click.BadParameter(f"no projection {name!r}; there are {known}", param_hint="NAME")
        with _progress(await services.projections.log_events(), f"rebuilding {name}") as advance:
            return await services.projections.rebuild(name, lambda done, _total: advance(done))

    replayed = with_services(rebuild)
    click.echo(f"{name} rebuilt from {replayed:,} events", err=True)


@main.group()
def policies() -> None:
    """Throttling rules: list, add, switch between observe and enforce, and what they decided."""


def _policy_line(p: Any) -> str:
    what = f"{p.metric.value} {'~/' + p.pattern + '/ ' if p.pattern else ''}>= {p.threshold:g} over {p.window}"
    narrowed = ",".join(f"{k}={v}" for k, v in (p.match or {}).items()) or "every value"
    return f"{p.name:<24} {p.mode.value:<8} {p.scope.value}:{narrowed}  {what}  -> {p.action.value} {p.duration}"


@policies.command("list")
@click.option("--json", "as_json", is_flag=True)
def policies_list(as_json: bool) -> None:
    """Every rule, by name."""
    listed = with_services(lambda s: s.policies.list_all())
    if as_json:
        click.echo(msgspec.json.encode(listed).decode())
        return
    for p in listed.data:
        click.echo(_policy_line(p))


@policies.command("add")
@click.argument("name")
@click.option("--metric", type=click.Choice(["bounce_rate", "deferral_rate", "response_match"]), required=True)
@click.option("--threshold", type=float, required=True, help="a rate (0.3) or, for response_match, a count")
@click.option("--window", default="10m", show_default=True)
@click.option("--min-events", default=20, show_default=True, type=int)
@click.option("--scope", type=click.Choice(["domain", "tenant", "campaign", "egress_source", "node"]), required=True)
@click.option("--match", "match", default=None, help="narrow to one value of the scope: domain=gmail.com")
@click.option("--pattern", default=None, help="response_match: a regular expression searched in the response")
@click.option("--duration", default="1h", show_default=True)
@click.option("--enforce", is_flag=True, help="act at once (default: observe, recording what it would do)")
def policies_add(
    name: str,
    metric: str,
    threshold: float,
    window: str,
    min_events: int,
    scope: str,
    match: str | None,
    pattern: str | None,
    duration: str,
    enforce: bool,
) -> None:
    """Add rule NAME (in observe mode unless --enforce)."""
    from controlplane.policies.schema import PolicyInput

    narrowed = None
    if match is not None:
        key, sep, value = match.partition("=")
        if not sep:
            raise click.BadParameter("give KEY=VALUE, e.g. domain=gmail.com", param_hint="--match")
        narrowed = {key: value}
    try:
        data = msgspec.convert(
            {
                "name": name,
                "metric": metric,
                "threshold": threshold,
                "window": window,
                "min_events": min_events,
                "scope": scope,
                "match": narrowed,
                "pattern": pattern,
                "duration": duration,
                "mode": "enforce" if enforce else "observe",
            },
            PolicyInput,
        )
    except msgspec.ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    created = with_services(lambda s: s.policies.create(data, actor=_actor()))
    click.echo(_policy_line(created))


def _set_mode(name: str, mode: str) -> None:
    from controlplane.policies.schema import Mode, PolicyPatch

    changed = with_services(lambda s: s.policies.update(name, PolicyPatch(mode=Mode(mode)), actor=_actor()))
    click.echo(_policy_line(changed))


@policies.command("observe")
@click.argument("name")
def policies_observe(name: str) -> None:
    """Let rule NAME only record what it would do."""
    _set_mode(name, "observe")


@policies.command("enforce")
@click.argument("name")
def policies_enforce(name: str) -> None:
    """Let rule NAME act: suspend through the operations path (audited, actor policy:NAME)."""
    _set_mode(name, "enforce")


@policies.command("decisions")
@click.option("--policy", default=None, help="only this rule's (name or id)")
@click.option("--active", is_flag=True, help="only those not lifted yet")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True)
def policies_decisions(policy: str | None, active: bool, limit: int, as_json: bool) -> None:
    """What the rules decided, newest first."""
    found = with_services(lambda s: s.policies.decisions(policy=policy, open_only=active, limit=limit))
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    for d in found.data:
        lifted = f"lifted {d.lifted_at:%Y-%m-%d %H:%M} by {d.lifted_by}" if d.lifted_at else f"until {d.until:%H:%M}"
        acted = f"operation {d.operation_id}" if d.operation_id else (d.note or "")
        click.echo(
            f"{d.decided_at:%Y-%m-%d %H:%M:%S}  {d.policy_name:<20} {d.mode!s:<8} {d.action} "
            f"{d.scope}:{d.scope_value}  {d.metric_value:g} ({d.events} events)  {lifted}  {acted}"
        )


@main.group()
def ship() -> None:
    """Ship an MTA's own log files to mtactl (run on the MTA's host)."""


for _command in SHIP_COMMANDS:
    ship.add_command(_command)


class _progress:
    """A rich progress bar on an interactive stderr; nothing otherwise (logs and pipes stay clean)."""

    def __init__(self, total: int | None, what: str = "importing") -> None:
        self._total = total
        self._what = what
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not sys.stderr.isatty():
            return lambda _: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task(self._what, total=self._total)
        return lambda done: self._bar.update(task, completed=done)

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@main.group()
def sources() -> None:
    """Egress sources' daily limits and sending windows (KumoMTA egress sources, ZoneMTA zones)."""


@sources.command("set")
@click.argument("name")
@click.option("--daily-limit", type=click.IntRange(min=0), required=True, help="Deliveries per local day")
@click.option("--window", default="00:00-24:00", show_default=True, help="Local sending hours, HH:MM-HH:MM")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone, e.g. Europe/Berlin")
@click.option("--node", "nodes", multiple=True, help="Hold it on these nodes only (id, name or label=value)")
@click.option("--tenant", "tenants", multiple=True, help="Tenants sending through it (for estimates)")
@click.option("--pool", "pools", multiple=True, help="Pools whose queued messages it carries (default: its name)")
def sources_set(
    name: str,
    daily_limit: int,
    window: str,
    timezone: str,
    nodes: tuple[str, ...],
    tenants: tuple[str, ...],
    pools: tuple[str, ...],
) -> None:
    """Create or change a source: mtactl holds its traffic outside the window and past the limit."""
    start, dash, end = window.partition("-")
    if not dash:
        raise click.BadParameter("HH:MM-HH:MM, e.g. 08:00-20:00", param_hint="--window")
    try:
        spec = msgspec.convert(
            {
                "daily_limit": daily_limit,
                "window": {"start": start, "end": end, "timezone": timezone},
                "nodes": list(nodes) or None,
                "tenants": list(tenants) or None,
                "pools": list(pools) or None,
            },
            SourceSpec,
        )
    except msgspec.ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    found = with_services(lambda s: s.capacity.put(name, spec, actor=_actor()))
    w = found.window
    click.echo(f"{found.name}: {found.daily_limit}/day, {w.start}-{w.end} {w.timezone}")


@sources.command("list")
@click.option("--json", "as_json", is_flag=True)
def sources_list(as_json: bool) -> None:
    """Every source with its limit and window."""
    found = with_services(lambda s: s.capacity.all())
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    for s in found.data:
        nodes = ",".join(s.nodes) or "every node"
        click.echo(f"{s.name}  {s.daily_limit}/day  {s.window.start}-{s.window.end} {s.window.timezone}  {nodes}")


@sources.command("remove")
@click.argument("name")
def sources_remove(name: str) -> None:
    """Forget a source (its holds are released by the next enforcement pass)."""
    gone = with_services(lambda s: s.capacity.delete(name, actor=_actor()))
    click.echo(f"removed {gone.name}")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def capacity(context: click.Context, as_json: bool) -> None:
    """Per source: used and remaining today, its window, holds and messages at risk of expiring."""
    if context.invoked_subcommand is not None:
        return
    report = with_services(lambda s: s.capacity.capacity())
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    click.echo(f"{'SOURCE':<24} {'LIMIT':>9} {'USED':>9} {'LEFT':>9}  {'WINDOW':<7} NEXT OPENS (UTC)   STATE")
    for c in report.data:
        state = "held" if c.holding else "sending"
        if c.holding and not c.held:
            state = "should be held (nothing held yet)"
        window = "open" if c.window_open else "closed"
        opens = f"{c.next_window_opens_at:%Y-%m-%d %H:%M}"
        click.echo(
            f"{c.name:<24} {c.daily_limit:>9} {c.used_today:>9} {c.remaining_today:>9}  {window:<7} {opens}   {state}"
        )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@capacity.command("estimate")
@click.argument("messages", type=click.IntRange(min=1))
@click.option("--tenant", default=None, help="Only the sources open to this tenant")
@click.option("--json", "as_json", is_flag=True)
def capacity_estimate(messages: int, tenant: str | None, as_json: bool) -> None:
    """When MESSAGES would be sent, by seed 002's rule (most remaining capacity first)."""
    found = with_services(lambda s: s.capacity.estimate(messages, tenant=tenant))
    if as_json:
        click.echo(msgspec.json.encode(found).decode())
        return
    if found.sending_days is None:
        click.echo("no source has a daily limit above 0: these messages would never be sent")
        return
    finishes = f"{found.finishes_at:%Y-%m-%d %H:%M} UTC" if found.finishes_at else "-"
    click.echo(f"{found.messages} messages over {found.sending_days} day(s), done by {finishes}")
    for day in found.per_day:
        click.echo(f"  {day.date}  {day.messages}")


@main.group()
def suppressions() -> None:
    """The suppression list (see "Suppressions" in the README)."""


def _suppression_line(entry: Any) -> str:
    expires = entry.expires_at.isoformat() if entry.expires_at else "never"
    return f"{entry.email}  {entry.reason.value}  tenant={entry.tenant_id or '-'}  expires={expires}"


@suppressions.command("list")
@click.option("--reason", type=click.Choice([r.value for r in SuppressionReason]), default=None)
@click.option("--tenant", default=None, help="Only this tenant's entries")
@click.option("--search", default=None, help="Part of the address")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def suppressions_list(reason: str | None, tenant: str | None, search: str | None, limit: int, as_json: bool) -> None:
    """Entries in force, newest first."""
    page = with_services(
        lambda s: s.suppressions.entries(
            tenant=None,
            tenant_id=tenant,
            reason=SuppressionReason(reason) if reason else None,
            search=search,
            limit=limit,
        )
    )
    if as_json:
        click.echo(msgspec.json.encode(page.data).decode())
        return
    for entry in page.data:
        click.echo(_suppression_line(entry))
    if page.has_more:
        click.echo(f"(more: raise --limit above {limit})", err=True)


@suppressions.command("add")
@click.argument("email")
@click.option("--reason", type=click.Choice([r.value for r in SuppressionReason]), default="manual")
@click.option("--tenant", default=None, help="For this tenant only (default: global)")
@click.option("--expires", default=None, help="ISO-8601 date-time when it stops applying")
@click.option("--note", default=None)
def suppressions_add(email: str, reason: str, tenant: str | None, expires: str | None, note: str | None) -> None:
    """Suppress EMAIL (and enforce it: ZoneMTA lists, queued messages cancelled or held)."""
    try:
        data = msgspec.convert(
            {"email": email, "reason": reason, "tenant_id": tenant, "expires_at": expires, "note": note},
            SuppressionCreate,
        )
    except msgspec.ValidationError as exc:
        raise click.BadParameter(str(exc)) from None
    detail = with_services(lambda s: s.suppressions.add(data, actor=_actor()))
    click.echo(_suppression_line(detail))
    if detail.cancel_operation_id:
        click.echo(f"queued messages cancelled by operation {detail.cancel_operation_id}")
    for held in detail.held_messages:
        click.echo(f"held (queued on an MTA that cannot cancel one message): {held}")
    if detail.pushed_to:
        click.echo(f"on the suppression list of: {', '.join(detail.pushed_to)}")


@suppressions.command("remove")
@click.argument("email")
@click.option("--tenant", default=None, help="The tenant's entry (default: the global one)")
def suppressions_remove(email: str, tenant: str | None) -> None:
    """Lift EMAIL's entry; prints the held messages it released."""
    removal = with_services(lambda s: s.suppressions.remove(email, actor=_actor(), tenant_id=tenant))
    for entry in removal.removed:
        click.echo(f"removed {_suppression_line(entry)}")
    for released in removal.released_messages:
        click.echo(f"released {released}")


@suppressions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def suppressions_import(file: Path) -> None:
    """Import FILE (CSV: the export's columns, all but email optional). Exit 2 when some rows were rejected."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException(f"{file} is not UTF-8") from None
    lines = text.count("\n") + 1

    async def run(services: Services) -> Any:
        with click.progressbar(length=lines, label="importing", file=sys.stderr) as bar:
            done = 0

            def advance(rows: int) -> None:
                nonlocal done
                bar.update(rows - done)
                done = rows

            return await services.suppressions.import_csv(text, actor=_actor(), progress=advance)

    report = with_services(run)
    click.echo(
        f"{report.rows} rows: {report.added} added, {report.already_present} already present, "
        f"{len(report.rejected)} rejected"
    )
    for row in report.rejected:
        click.echo(f"row {row.row}: {row.field}: {row.message}", err=True)
    if report.rejected:
        sys.exit(2)


@suppressions.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "form", type=click.Choice(["csv", "json", "kumomta"]), default="csv", show_default=True)
@click.option("--tenant", default=None, help="Only this tenant's entries")
def suppressions_export(file: Path, form: str, tenant: str | None) -> None:
    """Write every entry in force to FILE ("-": stdout)."""
    entries = with_services(lambda s: s.suppressions.export(tenant=None, tenant_id=tenant))
    if form == "json":
        chunks: list[str] = [msgspec.json.encode(entries).decode() + "\n"]
    else:
        chunks = list(csv_of(entries) if form == "csv" else kumomta_list(entries))
    out = sys.stdout if str(file) == "-" else file.open("w", encoding="utf-8", newline="")
    try:
        with click.progressbar(chunks, label="exporting", file=sys.stderr) as bar:
            for chunk in bar:
                out.write(chunk)
    finally:
        if out is not sys.stdout:
            out.close()
    click.echo(f"{len(entries)} entries written", err=True)


if __name__ == "__main__":
    main()
