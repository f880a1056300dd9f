"""Recording activity: the event item and the contact's recent summary, together.

The rules read activity from the contact item itself (so the nightly pass
reads each contact once): a bounded summary of recent events per type, each
``[epoch seconds, properties]``. The full history lives in the activity table.
Both are written in one transaction whose event put is conditional on the
event id being new, so a resent event changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from herald import clock
from herald.activity.model import RESPONSE_EVENTS, BulkEventIn, Event, EventIn
from herald.contacts import service as contacts
from herald.contacts.model import Contact
from herald.errors import Conflict, NotFound, StaleVersion
from herald.store import contacts as contact_store
from herald.store.tables import ActivityRecord
from herald.store.transactions import Operation, Unit, commit_units

# The summary keeps what rules can ask about: the last 400 days, 50 events a type.
SUMMARY_DAYS = 400
SUMMARY_PER_TYPE = 50
SUMMARY_TYPES = 30
HISTORY_DAYS = 730
EVENT_LABEL = "event"
RETRIES = 5


@dataclass
class Recorded:
    """The outcome of recording one event."""

    event: Event
    duplicate: bool


def record_event(contact_id: str, data: EventIn) -> Recorded:
    """Record ``data`` for the contact once; a repeated event id reports ``duplicate``."""
    event = new_event(contact_id, data)
    for _ in range(RETRIES):
        current = contacts.get_contact(contact_id)
        existing = _stored(contact_id, data.event_id)
        if existing is not None:
            return Recorded(existing, duplicate=True)
        after = summarised(current, event)
        unit = contact_store.change_unit(0, current, after)
        unit.operations.append(
            Operation("put", _record(event), EVENT_LABEL, condition=ActivityRecord.event_id.does_not_exist())
        )
        failure = commit_units([unit]).failures.get(0)
        if failure is None:
            return Recorded(event, duplicate=False)
        if EVENT_LABEL in failure.labels:
            stored = _stored(contact_id, data.event_id)
            if stored is not None:
                return Recorded(stored, duplicate=True)
        if contact_store.CONTACT_LABEL not in failure.labels and EVENT_LABEL not in failure.labels:
            raise Conflict(failure.message, id=contact_id)
    raise StaleVersion("contact", contact_id, None)


def new_event(contact_id: str, data: EventIn) -> Event:
    """The event as it will be stored, recorded now."""
    now = clock.now_iso()
    occurred = clock.to_iso(data.occurred_at) if data.occurred_at else now
    return Event(
        contact_id=contact_id,
        event_id=data.event_id,
        type=data.type,
        occurred_at=occurred,
        recorded_at=now,
        properties=data.properties,
    )


def recording_unit(tag: Any, contact: Contact, events: list[Event]) -> Unit:
    """All-or-nothing: the events' items (each only if new) and the contact's summary with all of them folded in.

    For callers that record many contacts' events in packed transactions (the
    sender); the unit fails as a whole if an event was already recorded or
    the contact changed since it was read, and the caller then falls back to
    :func:`record_event` per event.
    """
    after = contact
    for event in events:
        after = summarised(after, event)
    unit = contact_store.change_unit(tag, contact, after)
    for event in events:
        condition = ActivityRecord.event_id.does_not_exist()
        unit.operations.append(Operation("put", _record(event), EVENT_LABEL, condition=condition))
    return unit


def record_bulk(rows: list[Any]) -> list[dict[str, Any]]:
    """Record many events; each row reports recorded, duplicate or its errors."""
    outcomes: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        try:
            parsed = BulkEventIn.model_validate(row)
        except ValidationError as exc:
            outcomes.append({"index": index, "outcome": "invalid", "errors": contacts.field_errors(exc)})
            continue
        try:
            recorded = record_event(parsed.contact_id, EventIn(**parsed.model_dump(exclude={"contact_id"})))
        except NotFound as exc:
            outcomes.append({"index": index, "outcome": "not_found", "error": str(exc)})
            continue
        except Conflict as exc:
            outcomes.append({"index": index, "outcome": "conflict", "error": str(exc)})
            continue
        outcomes.append(
            {
                "index": index,
                "outcome": "duplicate" if recorded.duplicate else "recorded",
                "contact_id": parsed.contact_id,
                "event_id": parsed.event_id,
            }
        )
    return outcomes


def list_events(contact_id: str, limit: int = 50) -> list[Event]:
    """The contact's most recent events, newest first."""
    contacts.get_contact(contact_id)
    records = ActivityRecord.occurred_index.query(contact_id, scan_index_forward=False, limit=limit)
    return [_event(record) for record in records]


def summarised(contact: Contact, event: Event) -> Contact:
    """The contact with ``event`` folded into its recent-activity summary and responses."""
    at = datetime.fromisoformat(event.occurred_at.replace("Z", "+00:00")).timestamp()
    horizon = clock.now().timestamp() - SUMMARY_DAYS * 86_400
    scalars = {k: v for k, v in event.properties.items() if v is not None}
    entries = [e for e in contact.activity.get(event.type, []) if e[0] >= horizon]
    if at >= horizon:
        entries.append([int(at) if at == int(at) else at, scalars])
    entries.sort(key=lambda entry: entry[0])
    activity = dict(contact.activity)
    activity[event.type] = entries[-SUMMARY_PER_TYPE:]
    if not activity[event.type]:
        del activity[event.type]
    while len(activity) > SUMMARY_TYPES:
        # Keep the item bounded: the type whose latest event is oldest leaves the summary.
        stalest = min(activity, key=lambda kind: activity[kind][-1][0] if activity[kind] else 0)
        del activity[stalest]
    update: dict[str, Any] = {"activity": activity}
    response_field = RESPONSE_EVENTS.get(event.type)
    if response_field:
        campaigns = set(getattr(contact, response_field)) | {event.properties["campaign_id"]}
        update[response_field] = sorted(campaigns)
    return contact.model_copy(update=update)


def _record(event: Event) -> ActivityRecord:
    return ActivityRecord(
        contact_id=event.contact_id,
        event_id=event.event_id,
        event_type=event.type,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
        properties=event.properties or None,
        expires_at=int(time.time()) + HISTORY_DAYS * 86_400,
    )


def _stored(contact_id: str, event_id: str) -> Event | None:
    try:
        return _event(ActivityRecord.get(contact_id, event_id))
    except ActivityRecord.DoesNotExist:
        return None


def _event(record: ActivityRecord) -> Event:
    return Event(
        contact_id=record.contact_id,
        event_id=record.event_id,
        type=record.event_type,
        occurred_at=record.occurred_at,
        recorded_at=record.recorded_at,
        properties=record.properties or {},
    )
