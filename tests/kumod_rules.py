"""kumod's own rules for which scheduled queues an admin request selects, written out from its source (KumoCorp/kumomta
at 3ebc1e85: ``crates/message/src/queue_name.rs`` ``QueueNameComponents::parse``,
``crates/kumod/src/http_server/queue_name_multi_index.rs`` ``Criteria::matches``, the request structs in
``crates/kumo-api-types``), independently of mtactl's code, so tests can check what a body sent to kumod reaches."""

from __future__ import annotations

from typing import Any

# The fields each request struct deserializes; serde ignores others, except BounceV1Request (deny_unknown_fields).
REQUEST_FIELDS = {
    "suspend": {"campaign", "tenant", "domain", "queue_names"},
    "bounce": {"campaign", "tenant", "domain", "routing_domain", "queue_names"},
    "rebind": {"campaign", "tenant", "domain", "routing_domain"},
}
SELECTING = {"campaign", "tenant", "domain", "routing_domain", "queue_names"}
CONTROL = {"reason", "duration", "expires", "suppress_logging", "data", "trigger_rebind_event", "always_flush"}


def parse(name: str) -> tuple[str | None, str | None, str, str | None]:
    """(campaign, tenant, domain, routing_domain) as kumod splits a queue name."""
    prefix, at, rest = name.partition("@")
    campaign: str | None
    tenant: str | None
    if not at:
        campaign, tenant, rest = None, None, name
    elif ":" in prefix:
        campaign, _, tenant = prefix.partition(":")
    else:
        campaign, tenant = None, prefix
    domain, bang, routing = rest.partition("!")
    return campaign, tenant, domain, (routing if bang else None)


def _criterion(have: str | None, want: str | None) -> bool:
    if want is None:
        return True
    return have is not None and have == want


def selects(family: str, body: dict[str, Any], queue_name: str) -> bool:
    """Whether kumod, given ``body`` for ``family``, acts on the scheduled queue ``queue_name``."""
    known = REQUEST_FIELDS[family]
    if family == "bounce" and set(body) - known - CONTROL:
        return False  # deny_unknown_fields: the request is refused, nothing is bounced
    seen = {k: v for k, v in body.items() if k in known}
    names = seen.get("queue_names") or []
    if names:
        return queue_name in names
    campaign, tenant, domain, routing = parse(queue_name)
    return (
        _criterion(campaign, seen.get("campaign"))
        and _criterion(tenant, seen.get("tenant"))
        and _criterion(domain, seen.get("domain"))
        and _criterion(routing, seen.get("routing_domain"))
    )
