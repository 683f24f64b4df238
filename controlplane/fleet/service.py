"""Registering nodes, reading them back (without secrets), building their adapters, probing their health."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

import httpx
import msgspec
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.base import MtaAdapter, MtaError
from adapters.driver import NodeConfig
from adapters.http import DEFAULT_TIMEOUT_SECONDS, NodeAuth, NodeNetworks, pooled_client
from adapters.registry import driver_for
from controlplane.audit.service import AuditLog
from controlplane.db.tables import NodeHoldRow, NodeMessageRow, NodeQueuesRow, NodeRow
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.fleet.schema import MtaKind, Node, NodeCreate, NodeCredentials, NodeUpdate
from controlplane.fleet.secrets import SecretBox

T = TypeVar("T")
log = logging.getLogger("mtactl.fleet")


@dataclass(frozen=True)
class NodeFault:
    """Why something could not be done on one node (unreachable, refused, nonsense answered, …)."""

    reason: str


def _node(row: NodeRow) -> Node:
    return Node(
        id=row.id,
        name=row.name,
        kind=cast(MtaKind, row.kind),
        base_url=row.base_url,
        auth_scheme=row.auth_scheme,
        labels=row.labels,
        created_at=row.created_at,
        last_checked_at=row.last_checked_at,
        last_seen_at=row.last_seen_at,
        reachable=row.reachable,
        version=row.version,
        health_detail=row.health_detail,
        last_synced_at=row.last_synced_at,
        sync_error=row.sync_error,
        tsa_url=row.tsa_url,
    )


def _check_credentials(credentials: NodeCredentials) -> None:
    if credentials.scheme == "basic" and not (credentials.username and credentials.password):
        raise InvalidInput("basic credentials need username and password", field="credentials")
    if credentials.scheme == "bearer" and not credentials.token:
        raise InvalidInput("bearer credentials need a token", field="credentials")


class FleetService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        audit: AuditLog,
        box: SecretBox | None,
        networks: NodeNetworks | None = None,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._box = box
        self._networks = networks or NodeNetworks(None)
        # One client per node, kept between uses so its connection stays warm (see adapters.http). Per node, not
        # one for all: httpcore's pool scans every connection it holds for each request it places, which made one
        # shared pool quadratic in the size of the fleet.
        self._clients: dict[uuid.UUID, httpx.AsyncClient] = {}
        self._retiring: set[httpx.AsyncClient] = set()  # replaced clients, closed once in-flight requests end
        self._retired: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        retired, self._retired = self._retired, set()
        for task in retired:
            task.cancel()
        for client in [*clients.values(), *self._retiring]:
            await client.aclose()
        self._retiring.clear()

    async def _forget_client(self, node_id: uuid.UUID) -> None:
        """New requests to the node get a new client (its URL or credentials may have changed); the old one is
        closed once requests already under way on it have had their time, not under their feet."""
        client = self._clients.pop(node_id, None)
        if client is None:
            return
        self._retiring.add(client)
        task = asyncio.create_task(self._close_later(client))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _close_later(self, client: httpx.AsyncClient) -> None:
        # A request through the adapter's retries lasts at most about three timeouts and the retry delays.
        await asyncio.sleep(3 * DEFAULT_TIMEOUT_SECONDS + 1)
        self._retiring.discard(client)
        await client.aclose()

    def _seal(self, node_id: uuid.UUID, credentials: NodeCredentials | None) -> tuple[str, bytes | None]:
        if credentials is None or credentials.scheme == "none":
            return "none", None
        _check_credentials(credentials)
        if self._box is None:
            raise InvalidInput(
                "set MTACTL_SECRET_KEY to store node credentials (they are kept encrypted)", field="credentials"
            )
        return credentials.scheme, self._box.seal(msgspec.json.encode(credentials), context=node_id.bytes)

    def _check_reach(self, **urls: str | None) -> None:
        """A node URL outside MTACTL_NODE_NETWORKS is refused at registration (and every connection is checked)."""
        for field, url in urls.items():
            refusal = self._networks.refusal(url) if url else None
            if refusal:
                raise InvalidInput(refusal, field=field)

    async def create(self, data: NodeCreate, *, actor: str) -> Node:
        self._check_reach(base_url=data.base_url, tsa_url=data.tsa_url)
        node_id = uuid.uuid4()
        scheme, sealed = self._seal(node_id, data.credentials)
        row = NodeRow(
            id=node_id,
            name=data.name,
            kind=data.kind,
            base_url=data.base_url.rstrip("/"),
            auth_scheme=scheme,
            credentials=sealed,
            labels=data.labels,
            created_at=datetime.now(UTC),
            tsa_url=data.tsa_url.rstrip("/") if data.tsa_url else None,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
                await self._audit.record(
                    actor=actor,
                    action="node.create",
                    target=str(node_id),
                    success=True,
                    detail={
                        "name": data.name,
                        "kind": data.kind,
                        "base_url": row.base_url,
                        "labels": data.labels,
                        "auth_scheme": scheme,
                    },
                    session=session,
                )
        except IntegrityError:
            raise Conflict(f"a node named {data.name!r} exists already", field="name") from None
        return _node(row)

    async def all(self) -> list[Node]:
        async with self._sessions() as session:
            return [_node(r) for r in (await session.scalars(select(NodeRow).order_by(NodeRow.name))).all()]

    async def _row(self, session: AsyncSession, ref: str) -> NodeRow:
        """A node by id or by name."""
        try:
            row = await session.get(NodeRow, uuid.UUID(ref))
        except ValueError:
            row = await session.scalar(select(NodeRow).where(NodeRow.name == ref))
        if row is None:
            raise NotFound(f"no node {ref!r}", field="node")
        return row

    async def get(self, ref: str) -> Node:
        async with self._sessions() as session:
            return _node(await self._row(session, ref))

    async def update(self, ref: str, data: NodeUpdate, *, actor: str) -> Node:
        self._check_reach(base_url=data.base_url, tsa_url=data.tsa_url)
        try:
            async with self._sessions.begin() as session:
                row = await self._row(session, ref)
                changed = []
                if data.name is not None:
                    row.name = data.name
                    changed.append("name")
                if data.base_url is not None:
                    row.base_url = data.base_url.rstrip("/")
                    changed.append("base_url")
                if data.labels is not None:
                    row.labels = data.labels
                    changed.append("labels")
                if data.tsa_url is not None:
                    row.tsa_url = data.tsa_url.rstrip("/")
                    changed.append("tsa_url")
                if data.credentials is not None:
                    row.auth_scheme, row.credentials = self._seal(row.id, data.credentials)
                    changed.append("credentials")
                await self._audit.record(
                    actor=actor,
                    action="node.update",
                    target=str(row.id),
                    success=True,
                    detail={"changed": changed},
                    session=session,
                )
        except IntegrityError:
            raise Conflict(f"a node named {data.name!r} exists already", field="name") from None
        await self._forget_client(row.id)  # its URL or credentials may have changed
        return _node(row)

    async def delete(self, ref: str, *, actor: str) -> Node:
        async with self._sessions.begin() as session:
            row = await self._row(session, ref)
            await session.delete(row)
            # What was read from the node goes with it (no foreign keys: SQLite would not enforce them by default).
            await session.execute(delete(NodeQueuesRow).where(NodeQueuesRow.node_id == row.id))
            await session.execute(delete(NodeHoldRow).where(NodeHoldRow.node_id == row.id))
            await session.execute(delete(NodeMessageRow).where(NodeMessageRow.node_id == row.id))
            await self._audit.record(
                actor=actor,
                action="node.delete",
                target=str(row.id),
                success=True,
                detail={"name": row.name},
                session=session,
            )
        await self._forget_client(row.id)
        return _node(row)

    async def select(self, refs: list[str] | None) -> list[NodeRow]:
        """Nodes by id, name or label selector ("region=eu"); every node when ``refs`` is empty."""
        async with self._sessions() as session:
            rows = list((await session.scalars(select(NodeRow).order_by(NodeRow.name))).all())
        if not refs:
            return rows
        chosen: dict[uuid.UUID, NodeRow] = {}
        for ref in refs:
            key, is_label, value = ref.partition("=")
            found = [r for r in rows if (r.labels.get(key) == value if is_label else ref in (str(r.id), r.name))]
            if not found:
                raise InvalidInput(f"no node matches {ref!r}", field="nodes")
            chosen.update((r.id, r) for r in found)
        return list(chosen.values())

    def adapter(self, row: NodeRow) -> MtaAdapter:
        """The node's adapter, from its kind's driver (``adapters.registry``), its credentials opened here."""
        auth = NodeAuth()
        if row.credentials is not None:
            if self._box is None:
                raise InvalidInput("MTACTL_SECRET_KEY is not set; node credentials cannot be read", field="node")
            credentials = msgspec.json.decode(
                self._box.open(row.credentials, context=row.id.bytes), type=NodeCredentials
            )
            auth = NodeAuth(
                scheme=credentials.scheme,
                username=credentials.username,
                password=credentials.password,
                token=credentials.token,
            )
        if row.id not in self._clients:
            self._clients[row.id] = pooled_client(networks=self._networks)
        config = NodeConfig(name=row.name, base_url=row.base_url, auth=auth, tsa_url=row.tsa_url)
        return driver_for(row.kind).connect(config, http=self._clients[row.id])

    async def with_adapter(self, row: NodeRow, work: Callable[[MtaAdapter], Awaitable[T]]) -> T | NodeFault:
        """Run ``work`` against one node's adapter and close it. A failure comes back as a ``NodeFault``, never
        raised: in a fan-out, a sync or a probe, one node's fault is that node's alone. Faults of mtactl's own are
        logged as well."""
        try:
            adapter = self.adapter(row)
        except (MtaError, InvalidInput) as exc:
            return NodeFault(exc.message)
        try:
            return await work(adapter)
        except (MtaError, InvalidInput) as exc:
            return NodeFault(exc.message)
        except Exception as exc:
            log.exception("talking to node %s failed", row.name)
            return NodeFault(f"mtactl: {type(exc).__name__}: {exc}")
        finally:
            await adapter.close()

    async def probe_all(self) -> list[Node]:
        """Check every node's health concurrently and record what was seen."""
        async with self._sessions() as session:
            rows = (await session.scalars(select(NodeRow))).all()
        results = await asyncio.gather(*(self._probe(row) for row in rows))
        async with self._sessions.begin() as session:
            stored_rows = await stored_by_id(session, [row.id for row in rows])
            for row, (reachable, version, detail, checked_at) in zip(rows, results, strict=True):
                stored = stored_rows.get(row.id)
                if stored is None:  # deleted meanwhile
                    continue
                stored.last_checked_at = checked_at
                stored.reachable = reachable
                stored.version = version or stored.version
                stored.health_detail = detail
                if reachable:
                    stored.last_seen_at = checked_at
        return await self.all()

    async def _probe(self, row: NodeRow) -> tuple[bool, str | None, str | None, datetime]:
        health = await self.with_adapter(row, lambda adapter: adapter.health())
        if isinstance(health, NodeFault):
            return False, None, health.reason, datetime.now(UTC)
        return health.reachable, health.version, health.detail, health.checked_at


async def stored_by_id(session: AsyncSession, node_ids: list[uuid.UUID]) -> dict[uuid.UUID, NodeRow]:
    """The nodes with these ids, loaded in one query (those removed meanwhile are absent)."""
    found = await session.scalars(select(NodeRow).where(NodeRow.id.in_(node_ids)))
    return {row.id: row for row in found}
