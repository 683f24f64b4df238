"""KumoMTA's driver: kumod's admin API as an adapter (``client``), its log records as events (``log_source``)."""

from __future__ import annotations

import httpx

from adapters.base import Capabilities, MtaAdapter
from adapters.driver import NodeConfig
from adapters.kumomta.client import KUMOMTA_CAPABILITIES, KumoMtaClient
from adapters.kumomta.log_source import KUMOMTA
from adapters.model.events import EventSource


class KumoMtaDriver:
    kind = "kumomta"
    title = "KumoMTA"

    def capabilities(self) -> Capabilities:
        return KUMOMTA_CAPABILITIES

    def connect(self, node: NodeConfig, *, http: httpx.AsyncClient | None = None) -> MtaAdapter:
        return KumoMtaClient(node.base_url, auth=node.auth, node=node.name, http=http, tsa_url=node.tsa_url)

    @property
    def events(self) -> EventSource:
        return KUMOMTA


DRIVER = KumoMtaDriver()
