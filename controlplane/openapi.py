"""The OpenAPI document is the contract: what Litestar generates, completed once with what the server enforces.

Applied to the whole document, so a new endpoint is covered without a word in its controller:

* every error status an operation can answer is documented with the one error body (``ErrorBody``): 400 on every
  operation (any query string is checked), 401 and 403 where a key is needed, 404 where the path names a
  resource, 409 on writes, 422/502 where the server talks to MTA nodes, 503 wherever the database is read;
* public paths (``PUBLIC_PATHS``) say ``security: []``;
* request Structs declared ``forbid_unknown_fields`` say ``additionalProperties: false``;
* query parameters: bounds of 0 are kept (Litestar drops falsy bounds), and every ``Instant`` says the time
  rule of ``controlplane.instants``;
* rules across fields that JSON Schema can state (an operation needs a target) are stated;
* no string or key of a request holds a NUL (``controlplane.protocol.check_api_input`` refuses them).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from controlplane.auth.guard import PUBLIC_PATHS
from controlplane.instants import INSTANT_SCHEMA, is_instant

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorBody",
    "description": "Every error, whatever its status: a code, a message, and the offending field (or null).",
    "required": ["error", "message", "field"],
    "properties": {
        "error": {"type": "string", "examples": ["invalid_input", "unauthenticated", "not_found"]},
        "message": {"type": "string"},
        "field": {"oneOf": [{"type": "string"}, {"type": "null"}], "description": "parameter or body field"},
    },
}

STATUS_DESCRIPTIONS = {
    400: "Invalid input: a parameter or body field (named in `field`) is malformed or out of range",
    401: "No API key, or an unknown or revoked one",
    403: "The key lacks the scope, or is bound to another tenant",
    404: "No such resource",
    409: "The request clashes with the current state (a name already taken)",
    422: "The MTA cannot do this operation",
    502: "An MTA node refused or answered nonsense",
    503: "The database (or an MTA node) is unreachable",
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying (sent while the database is unavailable)",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

# Operations that reach MTA nodes while the caller waits.
NODE_FACING = re.compile(r"^(POST /api/v1/operations|DELETE /api/v1/(suspensions|bounces)/)")
LIVENESS = {"/api/v1/health"}  # answers without touching the database
WRITES = {"post", "patch", "put", "delete"}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def install_contract(app: Litestar) -> None:
    """Build the app's OpenAPI document now, completed by ``complete``; every schema endpoint serves it."""
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin._openapi_schema = complete(app.openapi_schema.to_schema(), parameter_facts(app))


def complete(document: dict[str, Any], facts: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ERROR_BODY_SCHEMA
    _forbid_unknown_fields(schemas)
    _operation_needs_a_target(schemas)
    _credentials_need_their_secret(schemas)
    _no_nul_in_requests(document)
    public = [re.compile(p) for p in PUBLIC_PATHS]
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            is_public = any(p.match(path) for p in public)
            if is_public:
                operation["security"] = []
            for parameter in operation.get("parameters", []):
                _parameter(parameter, facts.get((path, method, parameter["name"]), {}))
            statuses = {400}
            if not is_public:
                statuses |= {401, 403}
            if "{" in path:
                statuses.add(404)
            if method in WRITES:
                statuses.add(409)
            if NODE_FACING.match(f"{method.upper()} {path}"):
                statuses |= {422, 502}
            if path not in LIVENESS:
                statuses.add(503)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                existing = responses.get(str(status))
                if existing is not None and status == 503 and not _is_litestar_error(existing):
                    continue  # the operation documents its own 503 (detailed health's report)
                responses[str(status)] = {
                    "description": STATUS_DESCRIPTIONS[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    **({"headers": RETRY_AFTER} if status == 503 else {}),
                }
    return document


def _is_litestar_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return "status_code" in schema.get("properties", {})


def _parameter(parameter: dict[str, Any], facts: dict[str, Any]) -> None:
    # An optional parameter keeps Litestar's null branch: the server reads the value `null` as absent.
    schema = parameter.get("schema", {})
    if facts.get("anyOf") == INSTANT_SCHEMA["anyOf"]:
        described = schema.get("description")
        schema = {k: v for k, v in schema.items() if k not in ("format", "type", "description")} | facts
        schema["description"] = f"{described}; {INSTANT_SCHEMA['description']}" if described else facts["description"]
        parameter["description"] = schema["description"]
    else:
        schema.update(facts)
    parameter["schema"] = schema


def _forbid_unknown_fields(schemas: dict[str, Any]) -> None:
    """Request Structs (those declared ``forbid_unknown_fields``) are described by msgspec's own JSON Schema, which
    has every constraint msgspec enforces (Litestar's loses some: the number of labels, a label's length), and
    refuse unknown fields."""
    by_name = {cls.__name__: cls for cls in _structs(msgspec.Struct)}
    strict = [
        cls
        for name, cls in by_name.items()
        if name in schemas and cls.__struct_config__.forbid_unknown_fields and schemas[name].get("type") == "object"
    ]
    if not strict:
        return
    _, exact = msgspec.json.schema_components(strict, ref_template="#/components/schemas/{name}")
    for name, schema in exact.items():
        if name in schemas or name in {cls.__name__ for cls in strict}:
            schemas[name] = schema
    for cls in strict:
        schemas[cls.__name__]["additionalProperties"] = False


def _structs(base: type[msgspec.Struct]) -> list[type[msgspec.Struct]]:
    found: list[type[msgspec.Struct]] = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_structs(sub))
    return found


TARGET_FIELDS = ("domain", "tenant", "campaign", "routing_domain", "queue_name")


def _operation_needs_a_target(schemas: dict[str, Any]) -> None:
    """``OperationRequest``: at least one target field, or (a resume) ``metadata.suspension_id``."""
    request = schemas.get("OperationRequest")
    if request is None:
        return
    named: list[dict[str, Any]] = [
        {"required": [field], "properties": {field: {"type": "string", "minLength": 1}}} for field in TARGET_FIELDS
    ]
    if "everything" in request.get("properties", {}):
        named.append({"required": ["everything"], "properties": {"everything": {"const": True}}})
    by_suspension = {
        "required": ["operation", "metadata"],
        "properties": {
            "operation": {"const": "resume"},
            "metadata": {
                "type": "object",
                "required": ["suspension_id"],
                "properties": {"suspension_id": {"type": "string", "minLength": 1}},
            },
        },
    }
    request["anyOf"] = [*named, by_suspension]
    request["description"] = (
        request.get("description", "") + " Name the queues: at least one of "
        f"{', '.join(TARGET_FIELDS)}, or everything: true (a resume may name metadata.suspension_id instead)."
    ).strip()


def _credentials_need_their_secret(schemas: dict[str, Any]) -> None:
    """``NodeCredentials``: basic needs a username and a password, bearer a token (``fleet.service``)."""
    credentials = schemas.get("NodeCredentials")
    if credentials is None:
        return
    text = {"type": "string", "minLength": 1}

    def needs(scheme: str, *fields: str) -> dict[str, Any]:
        return {
            "if": {"required": ["scheme"], "properties": {"scheme": {"const": scheme}}},
            "then": {"required": list(fields), "properties": dict.fromkeys(fields, text)},
        }

    credentials["allOf"] = [needs("basic", "username", "password"), needs("bearer", "token")]


NO_NUL = "^[^\\u0000]*$"
NUL_FREE_JSON: dict[str, Any] = {
    "description": "Any JSON value without a NUL character in its strings and keys",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": "#/components/schemas/NulFreeJson"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/NulFreeJson"},
        },
    ],
}
_PLAIN_FORMATS = {"uuid", "date-time", "date"}


def _no_nul_in_requests(document: dict[str, Any]) -> None:
    """Strings and object keys of request bodies and parameters say they hold no NUL."""
    schemas = document["components"]["schemas"]
    schemas["NulFreeJson"] = NUL_FREE_JSON
    requested: set[str] = set()
    pending: list[Any] = []
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for parameter in operation.get("parameters", []):
                _forbid_nul(parameter.get("schema", {}))
            if "$ref" in str(operation.get("requestBody", {})):
                pending.append(operation["requestBody"])
    while pending:  # the components request bodies refer to, and theirs
        for ref in re.findall(r"#/components/schemas/([A-Za-z0-9_.-]+)", str(pending.pop())):
            if ref not in requested and ref in schemas and ref != "NulFreeJson":
                requested.add(ref)
                pending.append(schemas[ref])
    for name in requested:
        _forbid_nul(schemas[name])


def _forbid_nul(schema: Any) -> None:
    if isinstance(schema, list):
        for item in schema:
            _forbid_nul(item)
        return
    if not isinstance(schema, dict) or "$ref" in schema:
        return
    kind = schema.get("type")
    is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
    if is_string and not ({"pattern", "enum", "const"} & set(schema)) and schema.get("format") not in _PLAIN_FORMATS:
        schema["pattern"] = NO_NUL
    open_object = "additionalProperties" in schema or "properties" not in schema  # a dict, not a Struct
    if kind == "object" and open_object and schema.get("additionalProperties") is not False:
        schema.setdefault("propertyNames", {"pattern": NO_NUL})
        if schema.get("additionalProperties", True) in ({}, True):
            schema["additionalProperties"] = {"$ref": "#/components/schemas/NulFreeJson"}
    for key, value in schema.items():
        if key in ("properties", "$defs") and isinstance(value, dict):
            for inner in value.values():
                _forbid_nul(inner)
        elif isinstance(value, (dict, list)) and key != "examples":
            _forbid_nul(value)


_BOUNDS = (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum"))


def handler_parameters(app: Litestar) -> Iterator[tuple[HTTPRoute, Any, str, FieldDefinition]]:
    """Every parameter of every HTTP handler, its dependencies' included: (route, handler, name, field)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fields = dict(handler.parsed_fn_signature.parameters)
            for provider in handler.resolve_dependencies().values():
                signature = getattr(provider, "parsed_fn_signature", None)
                if signature is not None:
                    fields.update(signature.parameters)
            for name, field in fields.items():
                yield route, handler, name, field


def parameter_facts(app: Litestar) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What Litestar's schema misses about parameters, by (path, method, name): bounds of 0 (it drops falsy
    ones), and the time rule of ``Instant`` parameters (it knows no schema for the type)."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for route, handler, name, field in handler_parameters(app):
        facts: dict[str, Any] = {}
        if _mentions_instant(field):
            facts.update(INSTANT_SCHEMA)
        definition = field.kwarg_definition
        if definition is not None:
            facts.update({key: 0 for attr, key in _BOUNDS if getattr(definition, attr, None) == 0})
        if facts:
            for method in handler.http_methods:
                found[(route.path_format, method.lower(), name)] = facts
    return found


def _mentions_instant(field: FieldDefinition) -> bool:
    return is_instant(field.annotation) or any(_mentions_instant(inner) for inner in field.inner_types)
