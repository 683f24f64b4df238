"""Wire types of the throttling rules (``/api/v1/policies``) and their decisions."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta


class Metric(enum.StrEnum):
    bounce_rate = "bounce_rate"  # bounced / (delivered + bounced + deferred), a fraction
    deferral_rate = "deferral_rate"  # deferred / (delivered + bounced + deferred), a fraction
    response_match = "response_match"  # responses matching ``pattern``, a count


class PolicyScope(enum.StrEnum):
    domain = "domain"
    tenant = "tenant"
    campaign = "campaign"
    egress_source = "egress_source"
    node = "node"


class Action(enum.StrEnum):
    suspend = "suspend"  # no MTA mtactl drives has an admin call to slow a queue down (README "Throttling rules")


class Mode(enum.StrEnum):
    observe = "observe"
    enforce = "enforce"


Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Pattern = Annotated[str, Meta(min_length=1, max_length=200)]
Threshold = Annotated[float, Meta(ge=0, le=1_000_000_000)]
# humantime as kumod reads it ("10m", "1h 30m"); the range (and a total above zero) is checked in words.
_HUMANTIME = r"^\s*[0-9]+\s*[A-Za-z]+(\s*[0-9]+\s*[A-Za-z]+)*\s*$"
Window = Annotated[str, Meta(min_length=1, max_length=50, pattern=_HUMANTIME, examples=["10m"])]
HoldFor = Annotated[str, Meta(min_length=1, max_length=50, pattern=_HUMANTIME, examples=["1h"])]
MinEvents = Annotated[int, Meta(ge=1, le=1_000_000_000)]
Match = dict[Annotated[str, Meta(min_length=1, max_length=20)], Annotated[str, Meta(min_length=1, max_length=320)]]


class PolicyInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A rule: when ``metric`` for one value of ``scope`` crosses ``threshold`` over ``window`` (with at least
    ``min_events`` attempts, for the rates), ``action`` it for ``duration``. ``match`` narrows it to one value of its
    scope (``{"domain": "gmail.com"}``); without it the rule watches every value."""

    name: Name
    metric: Metric
    pattern: Pattern | None = None  # response_match only: a regular expression searched in the response
    threshold: Threshold  # a rate (0-1) for bounce_rate and deferral_rate, a count for response_match
    window: Window  # "10m": 1 minute to 7 days, in whole minutes
    min_events: MinEvents = 20
    scope: PolicyScope
    match: Match | None = None
    action: Action = Action.suspend
    duration: HoldFor  # "1h"
    mode: Mode = Mode.observe


class PolicyPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The fields to change; the rule as changed is checked as a whole."""

    name: Name | None = None
    metric: Metric | None = None
    pattern: Pattern | None = None
    threshold: Threshold | None = None
    window: Window | None = None
    min_events: MinEvents | None = None
    scope: PolicyScope | None = None
    match: Match | None = None
    action: Action | None = None
    duration: HoldFor | None = None
    mode: Mode | None = None


class Policy(PolicyInput, kw_only=True):
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class PolicyList(msgspec.Struct, kw_only=True):
    data: list[Policy]


class LiftedBy(enum.StrEnum):
    policy = "policy"  # the duration ended and the rule lifted what it held
    operator = "operator"  # someone lifted the hold before its end: the rule backs off for its duration
    expired = "expired"  # the MTA let the hold run out itself before the rule lifted it


class Decision(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A rule tripping for one value of its scope. ``operation_id``: the suspension it made (enforce mode);
    ``note``: what kept it from acting, or what some nodes refused (a ZoneMTA node has no suspend)."""

    id: uuid.UUID
    policy_id: uuid.UUID
    policy_name: str
    scope: PolicyScope
    scope_value: str
    action: Action
    mode: Mode
    metric_value: float
    events: int  # the attempts (rates) or the matching responses (response_match) it was decided on
    decided_at: datetime
    until: datetime
    operation_id: uuid.UUID | None = None
    lifted_at: datetime | None = None
    lifted_by: LiftedBy | None = None
    lift_operation_ids: list[uuid.UUID] | None = None
    note: str | None = None


class DecisionList(msgspec.Struct, kw_only=True):
    data: list[Decision]
    cursor: str | None = None
    has_more: bool = False


class DecisionCursor(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    offset: int
