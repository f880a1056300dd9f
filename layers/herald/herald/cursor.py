"""Opaque pagination cursors: base64url of a small JSON document.

Clients must treat a cursor as an opaque string; one that does not decode is a
400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from herald.errors import BadRequest


def encode_cursor(state: dict[str, Any] | None) -> str | None:
    """Encode a pagination state, or ``None`` when there are no more pages."""
    if state is None:
        return None
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """Decode a cursor from a client; raises ``BadRequest`` if it was not ours."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        state = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("cursor is not a valid pagination cursor", field="cursor") from exc
    if not isinstance(state, dict):
        raise BadRequest("cursor is not a valid pagination cursor", field="cursor")
    return state
