"""ZoneMTA rows and log entries onto the model: the identity of a mirrored message."""

from __future__ import annotations

import uuid

# A mirrored ZoneMTA message is one recipient of one queued message (ZoneMTA's row: queue id + seq).
ZONEMTA_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/zone-eu/zone-mta#mtactl-message")


def message_uuid(queue_id: str, recipient: str) -> uuid.UUID:
    return uuid.uuid5(ZONEMTA_NAMESPACE, f"zonemta\x1f{queue_id}\x1f{recipient.strip().lower()}")
