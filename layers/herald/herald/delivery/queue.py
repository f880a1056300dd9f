"""The delivery queue's message: one contact's sends, settled together by priority.

``{"contact_id": ..., "sends": [{"campaign_id", "occurrence", "priority", "queued_at"}]}``
— the tick, the event triggers and the release of deferred sends all build it here.
A flow step's send also names ``"flow": {"version", "step_id"}`` (``campaign_id``
is then the flow's id; built by :func:`herald.flows.sends.delivery_message`).
"""

from __future__ import annotations

from typing import Any

# The sender accepts at most this many sends in one queue message.
MAX_SENDS_PER_MESSAGE = 100


def delivery_messages(contact_id: str, sends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One contact's sends as delivery queue messages: highest priority first, each
    (campaign, occurrence) once, at most ``MAX_SENDS_PER_MESSAGE`` to a message."""
    unique = {(s["campaign_id"], s["occurrence"]): s for s in sends}
    ordered = sorted(unique.values(), key=lambda s: (s["priority"], s["campaign_id"], s["occurrence"]))
    bare = [{k: v for k, v in s.items() if k != "contact_id"} for s in ordered]
    return [
        {"contact_id": contact_id, "sends": bare[i : i + MAX_SENDS_PER_MESSAGE]}
        for i in range(0, len(bare), MAX_SENDS_PER_MESSAGE)
    ]
