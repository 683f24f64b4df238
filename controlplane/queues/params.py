"""``QueueFilter`` from query parameters: every filter field is a parameter, lists are repeated parameters."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from adapters.model import BounceType, MessageQueueStatus, QueueFilter, QueueSortField, QueueState
from controlplane.errors import InvalidInput
from controlplane.instants import Instant

# Bounds of the columns the values are compared with (num_attempts is an INTEGER, size_bytes a BIGINT): beyond
# them Postgres refuses the query argument (a 500) where SQLite compared happily.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

KNOWN_PARAMETERS = frozenset(QueueFilter.__struct_fields__) | {"cursor"}


async def provide_queue_filter(
    request: Request[Any, Any, Any],
    tenant_filter: NamedDependency[str | None],
    status: Annotated[
        list[MessageQueueStatus] | None, QueryParameter(description="Message status (repeatable)")
    ] = None,
    queue_state: Annotated[list[QueueState] | None, QueryParameter(description="Queue state (repeatable)")] = None,
    domain: Annotated[str | None, QueryParameter(description="Recipient domain")] = None,
    domains: Annotated[list[str] | None, QueryParameter(description="Recipient domains (repeatable)")] = None,
    sender: Annotated[str | None, QueryParameter(description="Envelope sender address")] = None,
    recipient: Annotated[str | None, QueryParameter(description="Recipient address")] = None,
    routing_domain: FromQuery[str | None] = None,
    campaign_id: FromQuery[str | None] = None,
    pool_name: FromQuery[str | None] = None,
    created_after: Annotated[Instant | None, QueryParameter(description="Inclusive")] = None,
    created_before: Annotated[Instant | None, QueryParameter(description="Exclusive")] = None,
    scheduled_after: Annotated[Instant | None, QueryParameter(description="Inclusive")] = None,
    scheduled_before: Annotated[Instant | None, QueryParameter(description="Exclusive")] = None,
    search_query: Annotated[
        str | None,
        QueryParameter(
            min_length=1, max_length=200, description="Case-insensitive substring of recipient, sender or subject"
        ),
    ] = None,
    tags: Annotated[
        list[str] | None, QueryParameter(description="Messages carrying all these tags (repeatable)")
    ] = None,
    min_attempts: Annotated[int | None, QueryParameter(ge=0, le=INT32_MAX)] = None,
    max_attempts: Annotated[int | None, QueryParameter(ge=0, le=INT32_MAX)] = None,
    bounce_type: FromQuery[BounceType | None] = None,
    min_size_bytes: Annotated[int | None, QueryParameter(ge=0, le=INT64_MAX)] = None,
    max_size_bytes: Annotated[int | None, QueryParameter(ge=0, le=INT64_MAX)] = None,
    priority: Annotated[int | None, QueryParameter(ge=0, le=10)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000, description="Page size (default 50, max 1000)")] = 50,
    offset: Annotated[int | None, QueryParameter(ge=0, le=10_000, description="Shallow pages only; use cursor")] = None,
    sort_by: Annotated[
        QueueSortField | None,
        QueryParameter(
            description="Default: the column of a range filter (size, attempts, scheduled), else created_at"
        ),
    ] = None,
    sort_order: FromQuery[Literal["asc", "desc"]] = "desc",
) -> QueueFilter:
    # A misspelt filter would otherwise be ignored and silently widen the result.
    for name in request.query_params:
        if name not in KNOWN_PARAMETERS:
            raise InvalidInput(f"unknown query parameter {name!r}", field=name)
    values = {
        name: value.plain() if isinstance(value, Instant) else value
        for name, value in locals().items()
        if name in QueueFilter.__struct_fields__ and value is not None
    }
    if tenant_filter is not None:  # the caller's tenant (``controlplane.auth.tenancy``), or the one it asked for
        values["tenant_id"] = tenant_filter
    try:
        return msgspec.convert(values, QueueFilter)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rsplit("$.", 1)[1].rstrip("`").split("[")[0] if "$." in message else None
        raise InvalidInput(message, field=field) from None
