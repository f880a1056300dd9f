"""Enter/exit events of segments, badges and audiences, from the memberships stream."""

from __future__ import annotations

import json
from typing import Any

import boto3

SOURCE = "herald.segments"
ENTERED, EXITED = "Membership Entered", "Membership Exited"
_TYPES = {"seg#": "segment", "bdg#": "badge", "aud#": "audience"}


def membership_event(record: dict[str, Any]) -> dict[str, Any] | None:
    """The event of one DynamoDB stream record, or None if it is not an entry or exit."""
    name = record.get("eventName")
    if name not in ("INSERT", "REMOVE"):
        return None
    change = record.get("dynamodb") or {}
    keys = change.get("Keys") or {}
    group_key = (keys.get("group_key") or {}).get("S", "")
    contact_id = (keys.get("contact_id") or {}).get("S")
    prefix = next((p for p in _TYPES if group_key.startswith(p)), None)
    if prefix is None or contact_id is None:
        return None
    image = change.get("NewImage" if name == "INSERT" else "OldImage") or {}
    return {
        "event_id": record.get("eventID"),
        "type": _TYPES[prefix],
        "id": group_key.removeprefix(prefix),
        "contact_id": contact_id,
        "change": "entered" if name == "INSERT" else "exited",
        "source": (image.get("source") or {}).get("S"),
        "at": change.get("ApproximateCreationDateTime"),
    }


class EventPublisher:
    """Puts events on one EventBridge bus; a refused entry raises so the record is retried."""

    def __init__(self, bus_name: str, client: Any | None = None) -> None:
        self._bus = bus_name
        self._client = client

    def _events(self) -> Any:
        if self._client is None:
            self._client = boto3.client("events")
        return self._client

    def publish(self, events: list[dict[str, Any]]) -> None:
        for start in range(0, len(events), 10):
            chunk = events[start : start + 10]
            entries = [
                {
                    "Source": SOURCE,
                    "DetailType": ENTERED if e["change"] == "entered" else EXITED,
                    "Detail": json.dumps(e, default=str),
                    "EventBusName": self._bus,
                }
                for e in chunk
            ]
            response = self._events().put_events(Entries=entries)
            if response.get("FailedEntryCount"):
                raise RuntimeError(f"EventBridge refused {response['FailedEntryCount']} events")
