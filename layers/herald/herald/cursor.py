"""Opaque pagination cursors: base64url of a small JSON document.

Clients must treat a cursor as an opaque string. A cursor carries the
listing it belongs to (endpoint and filters); one that does not decode, or
that belongs to another listing, is a 400, never a 500 or a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from herald.errors import BadRequest


def encode_cursor(state: dict[str, Any] | None, listing: str = "") -> str | None:
    """Encode a pagination state for a listing, or ``None`` when there are no more pages."""
    if state is None:
        return None
    # The state is nested, so none of its keys can collide with the listing's.
    raw = json.dumps({"s": state, "l": listing}, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, listing: str = "") -> dict[str, Any] | None:
    """Decode a cursor from a client; raises ``BadRequest`` if it was not made for this listing."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not a valid pagination cursor", field="cursor") from exc
    if not isinstance(state, dict) or not isinstance(state.get("s"), dict):
        raise BadRequest("cursor is not a valid pagination cursor", field="cursor")
    if state.get("l") != listing:
        raise BadRequest("cursor belongs to another listing (other filters or endpoint)", field="cursor")
    return dict(state["s"])
