"""mtactl's exception tree and its one mapping to HTTP.

    MtactlError                  500  (base; never raised directly)
    ├── InvalidInput             400  bad value in a request; names the field
    │   └── QueryTooBroad        400  a listing ran past its time limit; says what to narrow
    ├── Unauthenticated          401  no key, or an unknown/revoked one
    ├── Forbidden                403  the key lacks a scope or its tenant does not match
    ├── NotFound                 404  no such resource, or a feature switched off
    └── Conflict                 409  the request clashes with current state

MTA adapter errors (``adapters.base``) map here too: ``UnsupportedOperation`` is 422, ``MtaUnreachable`` 503,
``MtaAuthRefused``, ``MtaRefused`` and ``MtaBadAnswer`` 502 (the fault is the node's, not the caller's). Any
error that ``database_unavailable`` recognises is 503 ``database_unavailable`` with ``Retry-After``, never 500.

Every error body is ``{"error": <code>, "message": <text>, "field": <name or null>}``. Litestar's own request
validation errors are reshaped into the same body, so clients parse one error format.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR

from adapters.base import (
    MtaAuthRefused,
    MtaBadAnswer,
    MtaError,
    MtaUnreachable,
    TargetNotExpressible,
    UnsupportedOperation,
)
from controlplane.db.engine import database_unavailable

log = logging.getLogger("mtactl")
DATABASE_RETRY_AFTER_SECONDS = 5


class MtactlError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(MtactlError):
    status_code = 400
    code = "invalid_input"


class QueryTooBroad(InvalidInput):
    code = "query_too_broad"


class Unauthenticated(MtactlError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(MtactlError):
    status_code = 403
    code = "forbidden"


class NotFound(MtactlError):
    status_code = 404
    code = "not_found"


class Conflict(MtactlError):
    status_code = 409
    code = "conflict"


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str
    message: str
    field: str | None = None


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="mtactl"'
    return Response(ErrorBody(error=code, message=message, field=field), status_code=status, headers=headers or None)


def handle_mtactl_error(_: Request[Any, Any, Any], exc: MtactlError) -> Response[ErrorBody]:
    if exc.status_code >= 500:
        log.exception("unhandled mtactl error", exc_info=exc)
    return error_response(exc.status_code, exc.code, exc.message, exc.field)


def handle_mta_error(_: Request[Any, Any, Any], exc: MtaError) -> Response[ErrorBody]:
    if isinstance(exc, TargetNotExpressible):
        return error_response(422, "target_not_expressible", exc.message, exc.field)
    if isinstance(exc, UnsupportedOperation):
        return error_response(422, "unsupported_operation", exc.message, "operation")
    if isinstance(exc, MtaUnreachable):
        return error_response(503, "mta_unreachable", exc.message, "nodes")
    if isinstance(exc, MtaAuthRefused):
        return error_response(502, "mta_auth_refused", exc.message, "nodes")
    if isinstance(exc, MtaBadAnswer):
        return error_response(502, "mta_bad_answer", exc.message, "nodes")
    return error_response(502, "mta_refused", exc.message, "nodes")


def handle_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    field, message = _first_validation_problem(exc)
    return error_response(HTTP_400_BAD_REQUEST, "invalid_input", message, field)


def handle_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    cause = exc.__cause__
    if exc.status_code == 500 and isinstance(cause, msgspec.ValidationError) and "at `$.data" in str(cause):
        # Litestar calls a body field's problem a server error when the field shares its name with a dependency
        # (``tenant``): it is the client's input all the same.
        message, _at, path = str(cause).rpartition(" - at `$.data")
        field = path.rstrip("`").lstrip(".") or "body"
        return error_response(HTTP_400_BAD_REQUEST, "invalid_input", message, field)
    if exc.status_code >= 500:
        log.error("server error: %s", exc.detail, exc_info=exc)
    codes = {
        400: "invalid_input",
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
    }
    # Litestar's 405 carries the path's methods in ``Allow`` (RFC 9110 requires it): keep its headers.
    headers = {str(k): str(v) for k, v in (exc.headers or {}).items()}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers=headers)


def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    if database_unavailable(exc):  # not a bug: the database is away (stopped, restarting, unreachable)
        log.warning("database unavailable: %s", type(exc).__name__)
        response = error_response(503, "database_unavailable", "the database is unavailable; retry later")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response
    # The details go to the log, not the client: they may carry connection strings or row data.
    log.exception("unhandled error", exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error")


_NAMED_FIELD = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")


def _first_validation_problem(exc: ValidationException) -> tuple[str | None, str]:
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        problem = extra[0]
        key = str(problem.get("key") or "")
        message = str(problem.get("message") or exc.detail)
        in_body = str(problem.get("source")) == "body"
        if in_body and key == "data":  # Litestar names the body itself after the handler's parameter
            key = ""
        if not key and "$." in message:
            key = message.rsplit("$.", 1)[1].rstrip("`")
        named = _NAMED_FIELD.search(message)
        if named:  # msgspec names the absent or unknown field in the message, not in the path
            key = f"{key}.{named.group(1)}" if key else named.group(1)
        return (key or ("body" if in_body else None)), message
    return None, str(exc.detail)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    MtactlError: handle_mtactl_error,
    MtaError: handle_mta_error,
    ValidationException: handle_validation_error,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}
