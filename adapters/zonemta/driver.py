"""ZoneMTA's driver: its HTTP API as an adapter (``client``), its log entries as events (``log_source``)."""

from __future__ import annotations

import httpx

from adapters.base import Capabilities, MtaAdapter
from adapters.driver import NodeConfig
from adapters.model.events import EventSource
from adapters.zonemta.client import ZONEMTA_CAPABILITIES, ZoneMtaClient
from adapters.zonemta.log_source import ZONEMTA


class ZoneMtaDriver:
    kind = "zonemta"
    title = "ZoneMTA"

    def capabilities(self) -> Capabilities:
        return ZONEMTA_CAPABILITIES

    def connect(self, node: NodeConfig, *, http: httpx.AsyncClient | None = None) -> MtaAdapter:
        return ZoneMtaClient(node.base_url, auth=node.auth, node=node.name, http=http)

    @property
    def events(self) -> EventSource:
        return ZONEMTA


DRIVER = ZoneMtaDriver()
