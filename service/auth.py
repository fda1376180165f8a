"""Optional bearer tokens: when `api_tokens` is set, every route but the open ones needs one.

Open without a token: the health probes (`/health/live`, `/health/ready`, `/v2/health/live`,
`/v2/health/ready`, which orchestrators call unauthenticated), `/metrics` (scraped from inside the
cluster; keep it off the public ingress) and the API docs (`/docs`, `/redoc`, `/openapi.json`,
which describe the API but hold no model data). Everything else, predictions on all three
protocols, model metadata, reports and admin, answers `401 {"error": ...}` with
`WWW-Authenticate: Bearer` unless `Authorization: Bearer <token>` matches one configured token.

The check is on the exact decoded path, so an open path cannot be stretched to cover another
route; comparison is `hmac.compare_digest` against every token, so timing does not reveal which
prefix matched.
"""

from __future__ import annotations

import hmac

from starlette.responses import Response
from starlette.types import Scope

from service.errors import error_response

OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready",
                        "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authorized(header: bytes | None, tokens: tuple[bytes, ...]) -> bool:
    """Whether an Authorization header value carries one of the tokens."""
    if header is None or header[:7].lower() != b"bearer ":
        return False
    given = header[7:].strip()
    ok = False
    for token in tokens:  # no early exit: every token is compared
        ok |= hmac.compare_digest(given, token)
    return ok


def refusal(scope: Scope, tokens: tuple[bytes, ...]) -> Response | None:
    """The 401 answer for a request to a closed path without one of the tokens, else None."""
    if scope["path"] in OPEN_PATHS:
        return None
    header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    if authorized(header, tokens):
        return None
    message = "missing bearer token" if header is None else "invalid bearer token"
    return error_response(message, 401, CHALLENGE)
