"""A stand-in ZoneMTA for tests: a stateful respx handler serving ZoneMTA's HTTP API (port 12080) in the fixture shapes.

Use it as ``respx.route(host="zone-1.test").mock(side_effect=FakeZoneMta(...))``. The shapes are those in
``fixtures/zonemta/api/`` (see ``fixtures/zonemta/README.md``); the behaviour follows zone-eu/zone-mta at cf94b992
(3.10.18): routes in ``lib/api-server.js``, queue reads and writes in ``lib/mail-queue.js``, locks and skip domains in
``lib/queue-locker.js``. ZoneMTA never stores a status: a row whose ``queued`` is after now is deferred, any other
row is queued ("active"); rows disappear once delivered, bounced or deleted.

Where ZoneMTA's answer depends on MongoDB ordering the fake is deterministic: rows that tie on the sort key keep their
insertion order (MongoDB gives no such promise, so skip/limit paging over a tied key may repeat or miss rows there).
Not modelled: POST /send, /send-raw, /fetch, /store, /bounces, /internals; restify's own 404/405/400 bodies are
approximations (restify-errors ``{code, message}``); a non-string body field restify would crash on is stringified.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx

DEFAULT_ZONES = ("bounces", "default", "transactional")
DEFER_RESPONSE = "421 4.7.0 Try again later"
PAGE_CAP = 1000  # api-server.js: pageSize above 1000 is cut to 1000

# prom-client's register.contentType (prom-client 15)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def iso(moment: datetime) -> str:
    """A JS ``Date.toISOString()``: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(moment: datetime) -> int:
    """A JS ``Date.now()``-style timestamp (ms since the epoch)."""
    return int(moment.timestamp() * 1000)


def js_number(text: str) -> float:
    """JavaScript ``Number(text)`` for a trimmed string (NaN as ``nan``)."""
    if text == "":
        return 0.0
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", text) and text[0] not in "+-":
            return float(int(text, 16))
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?Infinity", text):
            return float(text.replace("Infinity", "inf"))
    except ValueError:
        pass
    return float("nan")


def js_or(value: float, default: float) -> float:
    """``value || default`` for a number: 0 and NaN are falsy."""
    return default if value == 0 or value != value else value


@dataclass
class QueueRow:
    """One row of the ``zone-queue`` collection (one recipient of one message)."""

    id: str
    seq: str
    zone: str
    recipient: str
    domain: str
    created: datetime
    queued: datetime  # <= now: queued (active); > now: deferred
    deferred: dict[str, Any] | None = None  # the row's ``_deferred``: first, count, last, next, response (ms / text)
    locked: bool = False  # held in queue-locker (a sender is delivering it): DELETE skips it
    lock_created: datetime | None = None
    order: int = 0  # insertion order, standing in for the MongoDB ``_id``


class FakeZoneMta:
    """A ZoneMTA API server with an in-memory queue. ``now`` is a fixed time or a clock (default: the real UTC clock);
    assign ``fake.now = ...`` to move a fixed clock."""

    def __init__(
        self,
        *,
        now: datetime | Callable[[], datetime] | None = None,
        zones: Iterable[str] = DEFAULT_ZONES,
        disabled_zones: Iterable[str] = (),
        fail_with: int | None = None,
        garbage: bool = False,
    ) -> None:
        self.now_source = now
        self.zones = list(zones)
        self.disabled_zones = set(disabled_zones)
        self.fail_with = fail_with
        self.garbage = garbage  # answer 200 with something ZoneMTA never sends (a proxy's error page, say)
        self.rows: list[QueueRow] = []
        self.meta: dict[str, dict[str, Any]] = {}  # GridFS metadata.data per message id
        self.suppressed: list[dict[str, Any]] = []  # {id, created (datetime), address?, domain?}
        self.skip_domains: dict[str, list[str]] = {}
        self.blacklist: list[dict[str, Any]] = []
        self.delivery_status: dict[tuple[str, str], int] = {}  # (status, zone) -> count
        self.pushed = 0
        self.bounces_generated = 0
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []  # (method, path, query, body)
        self._ids = itertools.count(1)

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        source = self.now_source
        if source is None:
            return datetime.now(UTC)
        return source if isinstance(source, datetime) else source()

    @now.setter
    def now(self, moment: datetime) -> None:
        self.now_source = moment

    def _next(self) -> int:
        return next(self._ids)

    def add_message(
        self,
        recipients: str | list[str],
        zone: str = "default",
        *,
        deferred: bool | int = False,
        locked: bool = False,
        sender: str = "news@sender.example",
        subject: str = "Hello",
        message_id: str | None = None,
        fbl: str | None = None,
        created: datetime | None = None,
        retry_in: timedelta = timedelta(minutes=30),
    ) -> str:
        """Queue a message for ``recipients`` in ``zone``; ``deferred`` (True or an attempt count) puts every row
        ``retry_in`` into the future with a ``_deferred`` history. Returns the 18-hex-char queue id."""
        to = [recipients] if isinstance(recipients, str) else list(recipients)
        now = self.now
        created = created or now
        n = self._next()
        ident = f"{ms(created):012x}{n:06x}"[-18:]
        message_id = message_id or f"<{ident}@sender.example>"
        count = int(deferred)
        for i, recipient in enumerate(to, start=1):
            row = QueueRow(
                id=ident,
                seq=f"{i:03x}",
                zone=zone,
                recipient=recipient,
                domain=recipient.rsplit("@", 1)[-1].lower(),
                created=created,
                queued=now + retry_in if count else created,
                order=self._next(),
            )
            if count:
                row.deferred = {
                    "first": ms(created) + 1000,
                    "count": count,
                    "last": ms(now),
                    "next": ms(now + retry_in),
                    "response": DEFER_RESPONSE,
                }
            self.rows.append(row)
            if locked:
                self.lock(ident, row.seq)
        date = created.strftime("%a, %d %b %Y %H:%M:%S +0000")
        headers = [
            {"key": "from", "line": f"From: {sender}"},
            {"key": "to", "line": f"To: {', '.join(to)}"},
            {"key": "subject", "line": f"Subject: {subject}"},
            {"key": "message-id", "line": f"Message-ID: {message_id}"},
            {"key": "date", "line": f"Date: {date}"},
        ]
        if fbl:
            headers.append({"key": "x-fbl", "line": f"X-FBL: {fbl}"})
        meta: dict[str, Any] = {
            "id": ident,
            "sessionId": f"{n:016x}",
            "interface": "feeder",
            "from": sender,
            "to": to,
            "origin": "10.0.0.15",
            "originhost": "[10.0.0.15]",
            "transhost": "app01.sender.example",
            "transtype": "ESMTP",
            "user": "app01",
            "time": ms(created),
            "dkim": {"hashAlgo": "sha256", "bodyHash": "HAuESLcsVfL2FGQCUtFOwTL6Ax18XDXZO2vOeAz+DpI="},
            "headers": headers,
            "messageId": message_id,
            "date": date,
            "parsedEnvelope": {"from": sender, "to": to, "cc": [], "bcc": [], "replyTo": False, "sender": False},
        }
        if fbl:
            meta["fbl"] = fbl
        meta |= {"bodySize": 1024, "sourceMd5": f"{n:032x}"}
        self.meta[ident] = meta
        self.pushed += 1
        return ident

    def lock(self, ident: str, seq: str | None = None, *, locked: bool = True) -> None:
        """Hold (or, with ``locked=False``, release) the queue-locker lock of a message's rows (one ``seq`` or all)."""
        for row in self.find(ident, seq):
            row.locked = locked
            row.lock_created = self.now if locked else None

    def find(self, ident: str, seq: str | None = None) -> list[QueueRow]:
        return [r for r in self.rows if r.id == ident and (seq is None or r.seq == seq)]

    def is_deferred(self, row: QueueRow, now: datetime | None = None) -> bool:
        return row.queued > (now or self.now)

    def suppress(self, address: str | None = None, domain: str | None = None, created: datetime | None = None) -> str:
        """Add a suppression-list entry as POST /suppressionlist does; returns its 24-hex id."""
        created = created or self.now
        entry: dict[str, Any] = {"id": f"{int(created.timestamp()):08x}{self._next():016x}", "created": created}
        if address:
            entry["address"] = address
        if domain:
            entry["domain"] = domain
        self.suppressed.append(entry)
        return str(entry["id"])

    def blacklist_ip(self, domain: str, address: str, response: str = "554 5.7.1 blocked") -> None:
        """Add a ``blacklist:<domain>:<ip>`` cache entry (lib/sending-zone.js ``deferDelivery``)."""
        row = next((r for r in self.rows if r.domain == domain), None)
        self.blacklist.append(
            {
                "id": row.id if row else "",
                "seq": row.seq if row else "",
                "address": address,
                "domain": domain,
                "response": response,
                "created": ms(self.now),
            }
        )

    def deleted(self) -> list[tuple[str, str]]:
        """The (id, seq) pairs DELETEd through the API, in order (whether or not ZoneMTA removed them)."""
        return [
            (p.split("/")[2], p.split("/")[3])
            for m, p, _, _ in self.requests
            if m == "DELETE" and p.startswith("/message/") and p.count("/") == 3
        ]

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = {k: ",".join(request.url.params.get_list(k)) for k in request.url.params}
        body = self._body(request)
        self.requests.append((request.method, request.url.path, query, body))
        if self.fail_with:
            return httpx.Response(self.fail_with, text="zonemta is unwell")
        if self.garbage:
            return httpx.Response(200, text="<html><body>Gateway says hello {{{</body></html>")
        if isinstance(body, InvalidJson):
            return httpx.Response(400, json={"code": "InvalidContent", "message": f"Invalid JSON: {body.reason}"})
        raw = request.url.raw_path.decode().split("?", 1)[0]
        parts = [unquote(p) for p in raw.strip("/").split("/")] if raw.strip("/") else []
        params: dict[str, Any] = dict(body) if isinstance(body, dict) else {}  # bodyParser({mapParams: true})
        method = request.method
        for route_method, pattern, handler in self._routes():
            names = self._match(pattern, parts)
            if names is None:
                continue
            if route_method != method:
                continue
            return handler(params | names, query)
        if any(self._match(p, parts) is not None for _, p, _ in self._routes()):
            return httpx.Response(405, json={"code": "MethodNotAllowed", "message": f"{method} is not allowed"})
        return httpx.Response(404, json={"code": "ResourceNotFound", "message": f"{raw} does not exist"})

    @staticmethod
    def _body(request: httpx.Request) -> Any:
        if not request.content:
            return None
        ctype = request.headers.get("content-type", "")
        text = request.content.decode(errors="replace")
        if "json" in ctype:
            try:
                return json.loads(text)
            except ValueError as exc:
                return InvalidJson(str(exc))
        if "x-www-form-urlencoded" in ctype:
            return dict(parse_qsl(text, keep_blank_values=True))
        return text

    @staticmethod
    def _match(pattern: str, parts: list[str]) -> dict[str, str] | None:
        segments = pattern.strip("/").split("/")
        if len(segments) != len(parts):
            return None
        names: dict[str, str] = {}
        for segment, part in zip(segments, parts, strict=True):
            if segment.startswith(":"):
                if not part:
                    return None
                names[segment[1:]] = part
            elif segment != part:
                return None
        return names

    def _routes(self) -> list[tuple[str, str, Callable[[dict[str, Any], dict[str, str]], httpx.Response]]]:
        return [
            ("GET", "/zones", self._zones),
            ("GET", "/counter/:type/:zone", self._counter),
            ("GET", "/queued/:type/:zone", self._queued),
            ("GET", "/message/:id", self._message),
            ("DELETE", "/message/:id/:seq", self._delete),
            ("PUT", "/message/:id/:seq", self._retry),
            ("GET", "/blacklist", self._blacklist),
            ("GET", "/skipdomains/:zone", self._skipdomains),
            ("GET", "/suppressionlist", self._suppression_list),
            ("POST", "/suppressionlist", self._suppression_add),
            ("DELETE", "/suppressionlist", self._suppression_delete),
            ("GET", "/metrics", self._metrics),
        ]

    # -- routes (lib/api-server.js) ------------------------------------------------------------------------------

    def _zones(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        include_disabled = re.match(r"(true|yes|1)", query.get("includeDisabled", ""), re.IGNORECASE) is not None
        names = [z for z in self.zones if include_disabled or z not in self.disabled_zones]
        return httpx.Response(200, json=[{"name": z} for z in sorted(names, key=str.lower)])

    def _count(self, zone: str, deferred: bool) -> dict[str, Any]:
        # mail-queue.js count(): one entry per zone asked for (here always the one :zone), rows = their sum
        now = self.now
        value = sum(1 for r in self.rows if r.zone == zone and self.is_deferred(r, now) == deferred)
        return {"entries": [{"key": zone, "value": value}], "rows": value}

    def _counter(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        # `{[req.params.type]: req.params.key || 'all', active, deferred}`: the :type param is only a key name; the
        # route has no :key, so its value is "all" unless a body field `key` is mapped into params. A :type of
        # "active" or "deferred" is overwritten by the count (the key keeps its first position).
        answer: dict[str, Any] = {params["type"]: params.get("key") or "all"}
        answer["active"] = self._count(params["zone"], deferred=False)
        answer["deferred"] = self._count(params["zone"], deferred=True)
        return httpx.Response(200, json=answer)

    def _queued(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        kind = str(params["type"]).lower().strip()
        kind = kind if kind in ("deferred", "queued") else "queued"
        start = js_or(js_number(query.get("start", "").strip()), 0)
        page_size = js_or(js_number(query.get("pageSize", "").strip()), PAGE_CAP)
        start = min(max(start, 0), 1_000_000_000)
        page_size = min(max(page_size, 0), PAGE_CAP)
        descending = query.get("order", "").strip().lower() != "asc"
        sort_key = query.get("sort", "").strip().lower()
        now = self.now
        rows = [r for r in self.rows if r.zone == params["zone"] and self.is_deferred(r, now) == (kind == "deferred")]
        if sort_key in ("created", "queued"):
            rows.sort(key=lambda r: getattr(r, sort_key), reverse=descending)
        else:
            rows.sort(key=lambda r: r.order, reverse=descending)
        skip = int(start)
        # mail-queue.js listQueued(): .skip(start).limit(pageSize); MongoDB's limit(0) means no limit
        page = rows[skip:] if int(page_size) == 0 else rows[skip : skip + int(page_size)]
        listed = [
            {
                "id": r.id,
                "zone": r.zone,
                "recipient": r.recipient,
                "created": iso(r.created),
                "queued": iso(r.queued),
                "deferred": (r.deferred or {}).get("count") or 0,
            }
            for r in page
        ]
        return httpx.Response(200, json={"zone": params["zone"], "type": kind, "list": listed})

    def _message(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        rows = sorted(self.find(params["id"]), key=lambda r: r.seq)
        if not rows:
            return httpx.Response(404, json={"error": "Selected message does not exist"})
        now = self.now
        messages = []
        for row in rows:
            deferred = self.is_deferred(row, now)
            entry: dict[str, Any] = {
                "id": row.id,
                "seq": row.seq,
                "zone": row.zone,
                "recipient": row.recipient,
                "status": "DEFERRED" if deferred else "QUEUED",
            }
            if row.locked:
                locked_at = row.lock_created or now
                entry["lock"] = {
                    "key": f"lock {row.id} {row.seq}",
                    "zone": row.zone,
                    "domain": row.domain,
                    "lockOwner": f"{row.order:020x}",
                    "maxConnections": 5,
                    "ttl": 3_600_000,
                    "expires": ms(locked_at) + 3_600_000,
                    "created": iso(locked_at),
                }
            if deferred and row.deferred is not None:
                entry["deferred"] = row.deferred
            messages.append(entry)
        # getMeta(): false when the GridFS file is gone
        return httpx.Response(200, json={"meta": self.meta.get(params["id"], False), "messages": messages})

    def _delete(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        # mail-queue.js remove(): a row already locked (being delivered) is skipped silently; success regardless
        doomed = [r for r in self.find(params["id"], params["seq"]) if not r.locked]
        self.rows = [r for r in self.rows if r not in doomed]
        if doomed and not self.find(params["id"]):
            self.meta.pop(params["id"], None)  # releaseDelivery() removes the body once no row refers to it
        return httpx.Response(200, json={"success": True})

    def _retry(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        # update(id, seq, {$set: {queued: new Date()}}): locked or not, `_deferred` is kept
        now = self.now
        for row in self.find(params["id"], params["seq"]):
            row.queued = now
        return httpx.Response(200, json={"success": True})

    def _blacklist(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        return httpx.Response(200, json={"list": list(self.blacklist)})

    def _skipdomains(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        # queue-locker.js listSkipDomains(): false, not [], when the zone has none
        return httpx.Response(200, json={"skipDomains": list(self.skip_domains.get(params["zone"], [])) or False})

    def _suppression_list(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        entries = []
        for entry in sorted(self.suppressed, key=lambda e: e["created"], reverse=True):
            shown: dict[str, Any] = {"id": entry["id"], "created": iso(entry["created"])}
            for key in ("address", "domain"):
                if entry.get(key):
                    shown[key] = entry[key]
            entries.append(shown)
        return httpx.Response(200, json={"suppressed": entries})

    def _suppression_add(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        # only body fields reach req.params (queryParser does not map the query string)
        address = str(params.get("address") or "").strip().lower()
        domain = str(params.get("domain") or "").strip().lower()
        if not address and not domain:
            return httpx.Response(200, json={"error": "No address or domain defined"})
        ident = self.suppress(address or None, _idna(domain) if domain else None)
        added: dict[str, Any] = {"id": ident}
        if address:
            added["address"] = address
        if domain:
            added["domain"] = _idna(domain)
        return httpx.Response(200, json={"suppressed": added})

    def _suppression_delete(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        # the id must come in a JSON or form body: `?id=` never reaches req.params, so it is "Invalid entry ID"
        ident = str(params.get("id") or "").strip().lower()
        if not re.fullmatch(r"[a-f0-9]{24}", ident):
            return httpx.Response(200, json={"error": "Invalid entry ID"})
        self.suppressed = [e for e in self.suppressed if e["id"] != ident]
        return httpx.Response(200, json={"deleted": ident})

    def _metrics(self, params: dict[str, Any], query: dict[str, str]) -> httpx.Response:
        now = self.now
        deferred = sum(1 for r in self.rows if self.is_deferred(r, now))
        lines = ["# HELP zonemta_delivery_status Delivery status", "# TYPE zonemta_delivery_status counter"]
        lines += [
            f'zonemta_delivery_status{{status="{status}",zone="{zone}"}} {n}'
            for (status, zone), n in self.delivery_status.items()
        ]
        lines += ["# HELP zonemta_message_push Messages pushed to queue", "# TYPE zonemta_message_push counter"]
        if self.pushed:
            lines.append(f'zonemta_message_push{{result="success"}} {self.pushed}')
        lines += [
            "# HELP zonemta_bounce_generation Bounce generation",
            "# TYPE zonemta_bounce_generation counter",
            f"zonemta_bounce_generation {self.bounces_generated}",
            "# HELP zonemta_message_drop Messages dropped",
            "# TYPE zonemta_message_drop counter",
            "zonemta_message_drop 0",
            # mail-queue.js queueCounterUpdate(): counted over all zones (ZoneMTA refreshes these every 10 s)
            "# HELP zonemta_queue_size Current size of the queue",
            "# TYPE zonemta_queue_size gauge",
            f'zonemta_queue_size{{type="queued"}} {len(self.rows) - deferred}',
            f'zonemta_queue_size{{type="deferred"}} {deferred}',
            "# HELP zonemta_blacklisted Blacklisted addresses",
            "# TYPE zonemta_blacklisted gauge",
            f"zonemta_blacklisted {len(self.blacklist)}",
        ]
        return httpx.Response(200, text="\n".join(lines) + "\n", headers={"content-type": METRICS_CONTENT_TYPE})


@dataclass
class InvalidJson:
    """A request body that claimed JSON but did not parse (restify answers 400 InvalidContent)."""

    reason: str


def _idna(domain: str) -> str:
    """address-tools.js normalizeDomain(): lower case, trimmed, punycode."""
    try:
        return domain.encode("idna").decode()
    except UnicodeError:
        return domain
