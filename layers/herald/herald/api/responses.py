"""Small helpers for JSON responses, ETags and If-Match."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from pydantic import BaseModel

from herald.errors import BadRequest

_ETAG = re.compile(r'^(?:W/)?"?(\d+)"?$')


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    """A JSON response; pydantic models are dumped in JSON mode."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":")),
        headers=headers or {},
    )


def etag(version: int) -> dict[str, str]:
    """The ETag header of a versioned record."""
    return {"ETag": f'"{version}"'}


def parse_if_match(value: str | None) -> int | None:
    """The version an ``If-Match`` header asks for (None when absent or ``*``)."""
    if value is None or value.strip() in ("", "*"):
        return None
    match = _ETAG.match(value.strip())
    if not match:
        raise BadRequest('If-Match must be a version ETag such as "3"', field="If-Match")
    return int(match.group(1))
