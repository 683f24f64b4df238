"""What every route shares at the HTTP level, applied once to the whole app: CORS, the ``Allow`` header of
OPTIONS answers, and the refusal of NUL characters in API input."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.openapi.spec import Parameter
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope

from controlplane.errors import InvalidInput
from controlplane.settings import Settings


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the origins in MTACTL_CORS_ORIGINS; off (no CORS headers at all) when there are none.

    Keys travel in the Authorization header, never in cookies, so credentials mode stays off.
    """
    if not settings.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Location", "Allow", "WWW-Authenticate"],
        allow_credentials=False,
    )


async def full_allow_on_options(message: Message, scope: Scope) -> None:
    """A ``before_send`` hook giving OPTIONS answers the path's full ``Allow`` list.

    Litestar builds a controller's routes one handler at a time, and the OPTIONS handler made for the first keeps
    that route's methods: ``OPTIONS /api/v1/nodes`` would say ``OPTIONS, POST`` though GET is served too.
    """
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    headers = MutableScopeHeaders.from_message(message)
    if "allow" not in headers:
        return
    app: Litestar = scope["litestar_app"]
    template = scope.get("path_template")
    for route in app.routes:
        if isinstance(route, HTTPRoute) and template in (route.path, route.path_format):
            headers["Allow"] = ", ".join(sorted(route.methods))
            return


NUL = "\x00"


async def check_api_input(request: Request[Any, Any, Any]) -> None:
    """The app's ``before_request`` hook: refuse a NUL character anywhere in a request's input, and an absent or
    malformed JSON body, before Litestar parses the input for the handler.

    PostgreSQL cannot store NUL in text or JSON, so a NUL that reached a query would be a 500 there and a match
    (or a stored value) on SQLite; refused here, both answer the same 400, naming the field. The check covers
    every query parameter (name and value), every path parameter, and every string and key of the JSON body of a
    handler that declares one (``data``). Handlers reading their body raw (event ingestion) keep it to themselves.
    """
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            raise InvalidInput(NUL_MESSAGE, field=name.replace(NUL, "\\u0000"))
    if request.method == "GET" and request.query_params:
        known = _query_parameters(request.app, request.scope.get("path_template") or "")
        # A misspelt filter would otherwise be ignored and silently widen the result (a listing, an export).
        unknown = sorted(name for name in request.query_params if known is not None and name not in known)
        if unknown:
            raise InvalidInput(f"unknown query parameter {unknown[0]!r}", field=unknown[0])
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            raise InvalidInput(NUL_MESSAGE, field=name)
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    body = await request.body()  # kept in the scope: the handler's parsing reads the same bytes
    if not body.strip():
        if data.is_optional or data.has_default:
            return
        raise InvalidInput("a JSON request body is required", field="body")
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the request body is not JSON: {exc}", field="body") from None
    where = _nul_in(document, "")
    if where is not None:
        raise InvalidInput(NUL_MESSAGE, field=where or "body")


def _query_parameters(app: Litestar, template: str) -> frozenset[str] | None:
    """The query parameters the API description gives a GET route (None: a route outside /api/v1, one it does
    not describe, or one that takes none): what the OpenAPI contract says a client may send, read once per
    route."""
    cache: dict[str, frozenset[str] | None] = app.state.setdefault("query_parameters", {})
    if template not in cache:
        found: frozenset[str] | None = None
        if template.startswith("/api/v1/"):
            path = next(
                (r.path_format for r in app.routes if isinstance(r, HTTPRoute) and template in (r.path, r.path_format)),
                template,
            )
            operation = (app.openapi_schema.paths or {}).get(path)
            if operation is not None and operation.get is not None:
                described = operation.get.parameters or ()
                query = [p.name for p in described if isinstance(p, Parameter) and p.param_in == "query"]
                # A route that takes no query parameter has no result to widen: a probe's cache-buster is harmless.
                found = frozenset(query) or None
        cache[template] = found
    return cache[template]


NUL_MESSAGE = "NUL characters (\\u0000) are not accepted in API input"


def _nul_in(value: Any, path: str) -> str | None:
    """The path (``labels.k``, ``nodes[0]``) of the first string or key holding a NUL, or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if NUL in key:
                return path or "body"
            found = _nul_in(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_in(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
