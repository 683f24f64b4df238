"""What each MTA kind's package exports: one driver, registered by kind in ``adapters.registry``.

A driver builds its adapter for one node from the node's registration (``NodeConfig``), declares what that MTA
can do (``Capabilities``), and names its event source (how it decodes its own log records into the neutral
``LogEvent``). The control plane works through drivers only: it never imports an MTA's package.
"""

from __future__ import annotations

from typing import Protocol

import httpx
import msgspec

from adapters.base import Capabilities, MtaAdapter
from adapters.http import NodeAuth
from adapters.model.events import EventSource


class NodeConfig(msgspec.Struct, kw_only=True, frozen=True):
    """One node as registered: where it answers, and its credentials (decrypted, for this use only)."""

    name: str
    base_url: str
    auth: NodeAuth = NodeAuth()
    tsa_url: str | None = None  # KumoMTA's traffic-shaping daemon beside the node, when it has one


class MtaDriver(Protocol):
    kind: str  # a node's ``kind``
    title: str  # for people: "KumoMTA"

    def capabilities(self) -> Capabilities: ...

    def connect(self, node: NodeConfig, *, http: httpx.AsyncClient | None = None) -> MtaAdapter:
        """The adapter for one node; ``http``: the process's client for that node, kept open between uses."""
        ...

    @property
    def events(self) -> EventSource | None:
        """The MTA's log records, or None when it posts none."""
        ...
