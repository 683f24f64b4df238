"""Queue names in KumoMTA's grammar, ``campaign:tenant@domain!routing_domain``, every part but domain optional.

mtactl uses the same grammar for every queue it names, so a queue imported from the legacy model and the same
queue seen later in KumoMTA's logs carry the same name.
"""

from __future__ import annotations

import msgspec


class QueueName(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    campaign: str | None = None
    tenant: str | None = None
    routing_domain: str | None = None

    @classmethod
    def parse(cls, name: str) -> QueueName:
        """Split a queue name; a name without '@' is a bare domain (or a custom queue name)."""
        # Same split order as kumod: the first '@' ends the prefix, the first ':' in it ends the campaign, and
        # a '!' after the domain starts the routing domain.
        campaign = tenant = None
        prefix, at, rest = name.partition("@")
        if not at:
            rest = name
        elif ":" in prefix:
            campaign, _, tenant = prefix.partition(":")
        else:
            tenant = prefix
        domain, _, routing = rest.partition("!")
        return cls(
            domain=domain,
            campaign=campaign or None,
            tenant=tenant or None,
            routing_domain=routing or None,
        )

    def has(
        self,
        *,
        domain: str | None = None,
        tenant: str | None = None,
        campaign: str | None = None,
        routing_domain: str | None = None,
    ) -> bool:
        """Whether this queue has every part given (parts not given select any value): how mtactl selects queues
        by criteria, for operations, holds and the mirror alike, whatever MTA holds the queue."""
        return (
            (domain is None or domain == self.domain)
            and (tenant is None or tenant == self.tenant)
            and (campaign is None or campaign == self.campaign)
            and (routing_domain is None or routing_domain == self.routing_domain)
        )

    def format(self) -> str:
        name = self.domain
        if self.tenant or self.campaign:
            prefix = f"{self.campaign}:" if self.campaign else ""
            name = f"{prefix}{self.tenant or ''}@{name}"
        if self.routing_domain:
            name = f"{name}!{self.routing_domain}"
        return name
