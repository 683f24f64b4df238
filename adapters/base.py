"""The one interface every MTA adapter implements, and the adapter exception tree.

    MtaError                      (base)
    ├── MtaUnreachable            the node did not answer (connect error, timeout) after bounded retries
    ├── MtaAuthRefused            the node refused our credentials (401/403)
    ├── MtaRefused                the node answered but said no (other 4xx, or 5xx after retries); keeps its reason
    ├── MtaBadAnswer              the node answered 2xx with something that is not what its API defines
    └── UnsupportedOperation      the MTA has no such operation (e.g. set_priority on KumoMTA); nothing was sent
        └── TargetNotExpressible  the MTA's request cannot name exactly the queues targeted; nothing was sent

``controlplane.errors`` maps these to HTTP in its one handler. Each MTA kind has one driver
(``adapters.registry``), which builds its adapter for a node and declares what it can do (``Capabilities``);
the control plane sees only these types.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
import sniffio

from adapters.model import QueueName, QueueOperationType
from adapters.model.observation import MessageObservation


class MtaError(Exception):
    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class MtaUnreachable(MtaError):
    pass


class MtaAuthRefused(MtaError):
    pass


class MtaRefused(MtaError):
    def __init__(self, message: str, *, status: int, node: str | None = None) -> None:
        super().__init__(message, node=node)
        self.status = status


class MtaBadAnswer(MtaError):
    pass


class UnsupportedOperation(MtaError):
    pass


class Target(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """Which scheduled queues an operation applies to: a queue is selected when it satisfies every field given
    (``queue_names``: it is one of them). ``everything`` selects every queue and is only ever given alone: an empty
    target selects nothing, because kumod reads a request naming no queue as "every queue"."""

    domain: str | None = None
    tenant: str | None = None
    campaign: str | None = None
    routing_domain: str | None = None
    queue_names: tuple[str, ...] | None = None
    everything: bool = False

    def fields(self) -> frozenset[str]:
        """The targeting fields this target sets."""
        given = {name for name in CRITERIA if getattr(self, name)}
        if self.queue_names is not None:
            given.add("queue_names")
        if self.everything:
            given.add("everything")
        return frozenset(given)

    def is_empty(self) -> bool:
        return not (self.everything or any(getattr(self, name) for name in CRITERIA) or self.queue_names)


CRITERIA = ("domain", "tenant", "campaign", "routing_domain")


def queue_matches(target: Target, queue_name: str) -> bool:
    """Whether ``target`` selects the queue ``queue_name``: the name must be one of ``queue_names`` when they are
    given, and the queue must have every criterion given (``QueueName.has``, the model's rule)."""
    if target.everything:
        return True
    if target.is_empty():
        return False
    if target.queue_names is not None and queue_name not in target.queue_names:
        return False
    return QueueName.parse(queue_name).has(
        domain=target.domain, tenant=target.tenant, campaign=target.campaign, routing_domain=target.routing_domain
    )


class TargetNotExpressible(UnsupportedOperation):
    """The MTA's request for this operation cannot name exactly the queues the target selects; nothing was sent."""

    def __init__(self, message: str, *, field: str, node: str | None = None) -> None:
        super().__init__(message, node=node)
        self.field = field


def express(
    target: Target, supports: frozenset[str], known_queues: Iterable[str] | None = None, *, operation: str = ""
) -> Target:
    """``target`` rewritten into the fields an MTA's request for one operation carries (``supports``), selecting
    no queue the target does not select, whatever queues exist on the node now or later.

    Fields the request lacks are expressed as ``queue_names``: the target's own names narrowed by its criteria, or,
    when it names none, the node's ``known_queues`` (its last sync) that the target selects. Without queue names,
    a single queue name that spells out all four parts is sent as those four criteria. Anything else raises
    ``TargetNotExpressible`` naming the field. An empty ``queue_names`` in the result means "nothing to do here"."""
    given = target.fields()
    if target.everything:
        if given != {"everything"}:
            raise TargetNotExpressible("`everything` selects every queue: give it alone", field="everything")
        if "everything" not in supports:
            raise TargetNotExpressible(f"{operation} cannot be sent to every queue", field="everything")
        return target
    if target.is_empty():
        raise TargetNotExpressible(
            "name the queues: domain, tenant, campaign, routing_domain or queue_name", field="domain"
        )
    if given <= supports and (given == {"queue_names"} or "queue_names" not in given):
        return target
    if "queue_names" in supports:
        if target.queue_names is not None:
            names: Iterable[str] = target.queue_names
        elif known_queues is None:
            missing = sorted(given - supports)[0]
            raise TargetNotExpressible(
                f"{operation} by {missing} is sent as the node's matching queue names, and this node was never "
                "synced: sync it first",
                field=missing,
            )
        else:
            names = known_queues
        return Target(queue_names=tuple(sorted({n for n in names if queue_matches(target, n)})))
    if given == {"queue_names"} and target.queue_names and len(target.queue_names) == 1:
        spelled = _spelled_out(target.queue_names[0])
        if spelled is not None and spelled.fields() <= supports:
            return spelled
    missing = sorted(given - supports)[0] if given - supports else "queue_name"
    field = "queue_name" if missing == "queue_names" else missing
    raise TargetNotExpressible(
        f"{operation} cannot name exactly the queues selected by {field}: "
        + (
            "give a queue name with all four parts (campaign:tenant@domain!routing_domain) or target by domain, "
            "tenant, campaign and routing_domain instead"
            if field == "queue_name"
            else f"this MTA's {operation} request has no {field}"
        ),
        field=field,
    )


def _spelled_out(name: str) -> Target | None:
    """A queue name whose four parts are all present and non-empty, as criteria: kumod then selects that queue
    only (a missing part would select every value of it)."""
    prefix, at, rest = name.partition("@")
    campaign, colon, tenant = prefix.partition(":")
    domain, bang, routing = rest.partition("!")
    if not (at and colon and bang) or not all((campaign, tenant, domain, routing)):
        return None
    return Target(campaign=campaign, tenant=tenant, domain=domain, routing_domain=routing)


class Suspension(msgspec.Struct, kw_only=True):
    id: str
    reason: str
    domain: str | None = None
    tenant: str | None = None
    campaign: str | None = None
    routing_domain: str | None = None
    queue_names: tuple[str, ...] | None = None  # the exact queues, for one made by queue names
    ready_queue: str | None = None  # set for a suspension of an egress path (ready queue)
    remaining: str | None = None  # as the MTA reports it (a humantime duration for kumod)
    # Who made it: "kumod" (its admin API; liftable) or "tsa" (a shaping rule; ends when it expires)
    source: str = "kumod"


class StandingBounce(msgspec.Struct, kw_only=True):
    id: str
    reason: str
    domain: str | None = None
    tenant: str | None = None
    campaign: str | None = None
    routing_domain: str | None = None
    queue_names: tuple[str, ...] | None = None
    remaining: str | None = None
    total_bounced: int = 0


class QueueCounts(msgspec.Struct, kw_only=True):
    """Messages per scheduled queue and per ready queue (egress path), as the node reports them."""

    scheduled: dict[str, int]
    ready: dict[str, int]


class NodeHealth(msgspec.Struct, kw_only=True):
    reachable: bool
    version: str | None = None
    checked_at: datetime
    detail: str | None = None


class OperationSupport(msgspec.Struct, kw_only=True, frozen=True):
    """How an MTA takes one operation: by queue (``target_fields``: the ``Target`` fields its request carries,
    with the meaning ``queue_matches`` gives them; what it lacks is expressed by ``express`` or refused), and/or
    per message (``per_message``: ``message_ids`` name exactly the messages it acts on)."""

    target_fields: frozenset[str] | None = frozenset()  # None: the adapter matches the target itself
    per_message: bool = False
    note: str | None = None  # how it is carried out, when that is not the MTA's own operation of that name


class Capabilities(msgspec.Struct, kw_only=True, frozen=True):
    """What one MTA kind can do: per operation, how it takes it, or in ``refused`` why it cannot."""

    operations: dict[QueueOperationType, OperationSupport]
    refused: dict[QueueOperationType, str]
    per_message_refusal: str = "this MTA has no per-message operations; target queues instead"
    lists_messages: bool = False  # ``queued_messages`` reads every queued message (the mirror can be synced)
    # Whether the MTA can hold an egress source's traffic (``hold_egress_path``), or why not.
    holds_egress: bool = False
    egress_hold_refusal: str = "this MTA cannot hold an egress source's traffic"
    # ``suppress``/``unsuppress`` put an address on the MTA's own suppression list and take it off (ZoneMTA's
    # /suppressionlist); False: the MTA has none reachable over its API (KumoMTA: a policy snippet enforces it)
    suppression_list: bool = False

    def support(self, operation: QueueOperationType, *, per_message: bool = False) -> OperationSupport:
        """How this MTA takes ``operation`` (per message, or by queue); ``UnsupportedOperation`` naming the
        reason when it cannot."""
        found = self.operations.get(operation)
        if found is None:
            raise UnsupportedOperation(self.refused.get(operation, f"{operation.value} is not supported"))
        if per_message and not found.per_message:
            raise UnsupportedOperation(f"{operation.value}: {self.per_message_refusal}")
        if not per_message and found.target_fields == frozenset():
            raise UnsupportedOperation(f"{operation.value} takes message_ids here, not a queue target")
        return found


class MessageRef(msgspec.Struct, frozen=True):
    """One message as its MTA knows it: its id there and the recipient (one MTA message may hold several)."""

    mta_message_id: str
    recipient: str


class OperationCall(msgspec.Struct, kw_only=True, frozen=True):
    """One operation as sent to one node: ``target`` already expressed in what this MTA's request carries."""

    operation: QueueOperationType
    target: Target
    reason: str
    duration: str | None = None
    data: dict[str, str] | None = None  # rebind: the metadata to set
    suspension_id: str | None = None  # resume: lift this one only
    # resume: per suspension id, the queue names mtactl recorded when it made that suspension by names
    recorded: dict[str, tuple[str, ...]] = {}
    messages: tuple[MessageRef, ...] | None = None  # a per-message operation: exactly these


class OperationDone(msgspec.Struct, kw_only=True):
    """What one node did: ``reference`` is the MTA's id for what was created or lifted (needed to undo it);
    ``affected``, when the adapter verified it, how many messages the node acted on; ``note``, what a reader
    should know (e.g. messages it could not act on, and why)."""

    reference: str | None = None
    affected: int | None = None
    note: str | None = None


class MtaAdapter(abc.ABC):
    """One MTA node. Every method talks to that node only; errors are ``MtaError`` subclasses."""

    kind: str

    @abc.abstractmethod
    async def health(self) -> NodeHealth: ...

    @abc.abstractmethod
    async def queue_counts(self) -> QueueCounts: ...

    @abc.abstractmethod
    async def inspect_message(self, message_id: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def suspend(self, target: Target, *, reason: str, duration: str | None = None) -> str:
        """Suspend delivery for the target; returns the suspension's id (needed to resume)."""

    @abc.abstractmethod
    async def resume(self, suspension_id: str) -> None: ...

    @abc.abstractmethod
    async def list_suspensions(self) -> list[Suspension]: ...

    @abc.abstractmethod
    async def bounce(
        self,
        target: Target,
        *,
        reason: str,
        duration: str | None = None,
        suppress_logging: bool = False,
        cancel: bool = False,
    ) -> str:
        """Fail the target's queued messages (and, while the bounce stands, new ones); returns its id. ``cancel``:
        an operator's cancellation rather than a bounce, which the MTA's records should say."""

    @abc.abstractmethod
    async def cancel_bounce(self, bounce_id: str) -> None: ...

    @abc.abstractmethod
    async def list_bounces(self) -> list[StandingBounce]: ...

    @abc.abstractmethod
    async def retry(self, target: Target, *, reason: str) -> None:
        """Make the target's messages due now."""

    @abc.abstractmethod
    async def rebind(self, target: Target, *, reason: str, data: dict[str, str]) -> None:
        """Move the target's messages to other queues by rewriting their metadata."""

    async def set_priority(self, target: Target, *, priority: int) -> None:
        raise UnsupportedOperation(f"{self.kind} has no message priority to set")

    @abc.abstractmethod
    async def perform(self, call: OperationCall) -> OperationDone:
        """Carry out one operation on this node, in this MTA's own requests (its operation mapping)."""

    def egress_paths(self, source: str, ready_queues: Iterable[str]) -> list[str]:
        """The egress paths (ready queues, as ``queue_counts`` names them) that carry ``source``'s traffic."""
        return []

    async def hold_egress_path(self, path: str, *, reason: str, duration: str | None = None) -> str:
        """Hold one egress path (by the MTA's own means) for ``duration``; returns the hold's id, which
        ``resume`` lifts and ``list_suspensions`` lists (as ``ready_queue``)."""
        raise UnsupportedOperation(f"{self.kind} cannot hold an egress path")

    async def suppression_entries(self) -> dict[str, str]:
        """The addresses on the MTA's own suppression list, each with the MTA's id for its entry."""
        raise UnsupportedOperation(f"{self.kind} has no suppression list reachable over its API")

    async def suppress(self, address: str) -> str:
        """Put ``address`` on the MTA's own suppression list; returns the MTA's id for the entry (to lift it)."""
        raise UnsupportedOperation(f"{self.kind} has no suppression list reachable over its API")

    async def unsuppress(self, reference: str) -> None:
        """Take the entry ``suppress`` returned off the MTA's suppression list (gone already: nothing to do)."""
        raise UnsupportedOperation(f"{self.kind} has no suppression list reachable over its API")

    async def queued_messages(self) -> list[MessageObservation] | None:
        """Every message the node holds, as ``MessageObservation``s, when the MTA can list them (None: it
        cannot; its messages are known from its events only)."""
        return None

    async def close(self) -> None:
        return None


def declare_asyncio() -> None:
    """Tell sniffio that the current context runs on asyncio. httpcore and anyio ask it on every read, write and
    lock; declared, it answers from a context variable instead of inspecting the running task: about a fifth of
    the CPU of a fan-out to 100 nodes (bench/fanout.py). Tasks started afterwards inherit the declaration."""
    sniffio.current_async_library_cvar.set("asyncio")
