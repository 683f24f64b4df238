"""HTTP clients for MTA adapters, kept between uses.

Adapters are cheap, short-lived objects (one per node and operation); connections are not. The fleet registry
keeps one client per node and hands it to each adapter it builds, so the node's connections stay open between
uses: the sync job reads each node every MTACTL_SYNC_INTERVAL_SECONDS, inside the keep-alive window, and an
operation usually finds its connection open, paying neither a TCP (and TLS) handshake nor a client's
construction per node.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx
import msgspec

from adapters.base import MtaAuthRefused, MtaBadAnswer, MtaRefused, MtaUnreachable

# Longer than the default sync interval (15 s), so the sync keeps connections warm for operations. A node that
# closes an idle connection first costs nothing but a new one: httpcore notices before reusing it.
KEEPALIVE_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 10.0
RETRY_DELAYS = (0.2, 0.5)  # three attempts in all

T = TypeVar("T")


@functools.cache
def tls_context() -> ssl.SSLContext:
    # Building one loads the CA bundle (~20 ms of CPU); every client shares this one.
    return ssl.create_default_context(cafile=certifi.where())


class NodeNetworks:
    """Where node URLs may point (``MTACTL_NODE_NETWORKS``): networks (CIDRs) and host names; ``None``: anywhere.

    A connection goes to a host name listed here, or to an address inside a listed network: the name is resolved
    when the connection is made and only allowed addresses are dialled, so a name that resolves elsewhere later
    (DNS rebinding) reaches nothing. A listed host name is trusted for whatever it resolves to. An entry starting
    with a dot (".mta.internal") allows every name under it."""

    def __init__(self, entries: Iterable[str] | None) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        self.any = entries is None
        for entry in entries or ():
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not all(part.isalnum() or "-" in part for part in entry.strip(".").split(".")):
                    raise ValueError(f"{entry!r} is neither a network (CIDR) nor a host name") from None
                self.names.add(entry)

    @classmethod
    def parse(cls, setting: str | None) -> NodeNetworks:
        """From the setting's text: comma-separated entries; unset, empty or "any" allows every host."""
        if setting is None or setting.strip().lower() in ("", "any"):
            return cls(None)
        return cls(setting.split(","))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return self.any or host in self.names or any(n.startswith(".") and host.endswith(n) for n in self.names)

    def allows_address(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return self.any or any(ip in network for network in self.networks)

    def refusal(self, url: str) -> str | None:
        """Why a node URL is refused at registration, or None. A name that is not listed is allowed only when it
        resolves inside a listed network; that is checked again at every connection."""
        host = urlsplit(url).hostname or ""
        if self.any or self.allows_name(host) or self.allows_address(host):
            return None
        if not self.networks or _is_address(host):
            return f"{host} is outside MTACTL_NODE_NETWORKS"
        return None  # a name: decided on its resolved addresses, when connecting

    async def allowed_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` a connection may be made to; raises ``httpcore.ConnectError`` for none."""
        if _is_address(host):
            if self.allows_address(host):
                return [host]
            raise httpcore.ConnectError(f"{host} is outside MTACTL_NODE_NETWORKS")
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        allowed = addresses if self.allows_name(host) else [a for a in addresses if self.allows_address(a)]
        if not allowed:
            raise httpcore.ConnectError(f"{host} resolves outside MTACTL_NODE_NETWORKS ({', '.join(addresses)})")
        return allowed


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, dialling only the addresses ``NodeNetworks`` allows for each connection."""

    def __init__(self, networks: NodeNetworks, inner: httpcore.AsyncNetworkBackend) -> None:
        self._networks = networks
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception | None = None
        for address in await self._networks.allowed_addresses(host, port):
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                error = exc
        raise error or httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("node URLs are TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=5, keepalive_expiry=KEEPALIVE_SECONDS)


def pooled_client(
    *, transport: httpx.AsyncBaseTransport | None = None, networks: NodeNetworks | None = None
) -> httpx.AsyncClient:
    if transport is None and networks is not None and not networks.any:
        guarded = httpx.AsyncHTTPTransport(verify=tls_context(), limits=LIMITS, trust_env=False)
        # httpx takes no network backend of its own; its pool's is swapped for one that checks every address dialled.
        pool: Any = guarded._pool
        pool._network_backend = GuardedBackend(networks, pool._network_backend)
        transport = guarded
    return httpx.AsyncClient(
        verify=tls_context(),
        # Proxy settings are not read from the environment (0.1-0.2 ms of CPU per client): kumod's and ZoneMTA's
        # admin APIs are reached directly, on the internal network.
        trust_env=False,
        timeout=DEFAULT_TIMEOUT_SECONDS,
        limits=LIMITS,
        transport=transport,
    )


class NodeAuth(msgspec.Struct, kw_only=True, frozen=True):
    """How to authenticate to a node's API: none (a trusted host), HTTP Basic, or a Bearer token. kumod checks
    these itself; ZoneMTA has no auth of its own and is put behind a proxy that checks either."""

    scheme: str = "none"  # "none" | "basic" | "bearer"
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def httpx_auth(self) -> httpx.Auth | None:
        if self.scheme == "basic":
            return httpx.BasicAuth(self.username or "", self.password or "")
        return None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.scheme == "bearer" and self.token else {}


class NodeHttp:
    """One node's HTTP API: its base URL and credentials, bounded retries, and every failure raised as the adapter
    exception tree (``adapters.base``). A 5xx and a transport error are retried (``RETRY_DELAYS``); a 4xx is the
    node's answer and is not; a redirect is never followed (a node URL must not lead mtactl elsewhere)."""

    def __init__(
        self,
        base_url: str,
        *,
        node: str | None = None,
        auth: NodeAuth | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``http``: the process's client for this node (``pooled_client``), left open by ``close``; without it
        a client of its own is made and owned."""
        self.node = node or base_url
        self.base = base_url.rstrip("/")
        auth = auth or NodeAuth()
        self._auth = auth.httpx_auth()
        self._headers = auth.headers()
        self.timeout = timeout
        self._owns_http = http is None
        self.http = http if http is not None else pooled_client(transport=transport)

    async def close(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> httpx.Response:
        last_error = ""
        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                response = await self.http.request(
                    method,
                    self.base + path,
                    json=json,
                    params=params,
                    data=data,
                    headers=self._headers,
                    auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                    timeout=self.timeout,
                )
            except httpx.TransportError as exc:  # connect errors, timeouts, broken connections
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status in (401, 403):
                    raise MtaAuthRefused(f"{self.node} refused the credentials ({status})", node=self.node)
                if 300 <= status < 400:
                    raise MtaRefused(
                        f"{self.node}: {status} redirect to {response.headers.get('location', '?')}",
                        status=status,
                        node=self.node,
                    )
                if status < 500:
                    if status >= 400:
                        raise MtaRefused(
                            f"{self.node}: {status} {response.text.strip()[:500]}", status=status, node=self.node
                        )
                    return response
                last_error = f"{status} {response.text.strip()[:500]}"
                if attempt == len(RETRY_DELAYS):
                    raise MtaRefused(f"{self.node}: {last_error}", status=status, node=self.node)
            if attempt < len(RETRY_DELAYS):
                await asyncio.sleep(RETRY_DELAYS[attempt])
        raise MtaUnreachable(f"{self.node} unreachable: {last_error}", node=self.node)

    def decode(self, response: httpx.Response, kind: type[T]) -> T:
        """The answer as ``kind``; anything else is ``MtaBadAnswer`` naming the path."""
        try:
            return msgspec.json.decode(response.content, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            path = response.request.url.path
            raise MtaBadAnswer(f"{self.node}: unexpected answer to {path}: {exc}", node=self.node) from None
