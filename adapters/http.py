"""HTTP clients for MTA adapters, kept between uses.

Adapters are cheap, short-lived objects (one per node and operation); connections are not. The fleet registry
keeps one client per node and hands it to each adapter it builds, so the node's connections stay open between
uses: the sync job reads each node every MTACTL_SYNC_INTERVAL_SECONDS, inside the keep-alive window, and an
operation usually finds its connection open, paying neither a TCP (and TLS) handshake nor a client's
construction per node.
"""

from __future__ import annotations

import functools
import ssl

import certifi
import httpx

# Longer than the default sync interval (15 s), so the sync keeps connections warm for operations. A node that
# closes an idle connection first costs nothing but a new one: httpcore notices before reusing it.
KEEPALIVE_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 10.0


@functools.cache
def tls_context() -> ssl.SSLContext:
    # Building one loads the CA bundle (~20 ms of CPU); every client shares this one.
    return ssl.create_default_context(cafile=certifi.where())


def pooled_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=tls_context(),
        # Proxy settings are not read from the environment (0.1-0.2 ms of CPU per client): kumod's and ZoneMTA's
        # admin APIs are reached directly, on the internal network.
        trust_env=False,
        timeout=DEFAULT_TIMEOUT_SECONDS,
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=5, keepalive_expiry=KEEPALIVE_SECONDS),
        transport=transport,
    )
