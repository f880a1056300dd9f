"""Flow step sends on the delivery queue (the sender side is being extended in parallel)."""

from __future__ import annotations

from typing import Any

from herald.store import messages


def step_message_id(flow_id: str, contact_id: str, occurrence: str) -> str:
    """The message id of one flow step send: deterministic, so the sender's claim makes it once."""
    return messages.message_id(flow_id, contact_id, occurrence, 0)


def delivery_message(
    flow_id: str, version: int, step_id: str, contact_id: str, occurrence: str, priority: int, queued_at: str
) -> dict[str, Any]:
    """The delivery queue message of one flow step for one contact."""
    send = {
        "campaign_id": flow_id,
        "occurrence": occurrence,
        "priority": priority,
        "queued_at": queued_at,
        "flow": {"version": version, "step_id": step_id},
    }
    return {"contact_id": contact_id, "sends": [send]}
