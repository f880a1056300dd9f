"""Event triggers: a contact event fires every matching trigger campaign once.

The activity table's stream brings each newly recorded event (login,
purchase, returned_item, campaign.opened ...). For each launched, eligible
trigger campaign on that event type whose targeting selects the contact, the
event id becomes the enrolment's occurrence: a conditional write lets each
occurrence through once, however often the stream delivers the record, and
the delivery rides in an outbox item until it is queued (a crash in between
leaves it for the next tick to queue). Events older than a day (imports of
history) do not fire.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from herald.campaigns import eligibility
from herald.campaigns.model import CampaignFields, CampaignKind, effective_priority
from herald.campaigns.targeting import targeted_among
from herald.campaigns.tick import live_campaigns, sends_of
from herald.clock import to_iso
from herald.delivery.queue import delivery_messages
from herald.store import enrolments as store
from herald.store import stats
from herald.store.enrolments import Enrolment
from herald.store.tables import CampaignRecord, ContactRecord

MAX_EVENT_AGE = timedelta(hours=24)

QueueSend = Callable[[list[dict[str, Any]]], None]


@dataclass
class TriggerReport:
    """What one event did."""

    fired: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    skipped: str | None = None


def event_campaigns(event_type: str, now: datetime) -> list[tuple[CampaignRecord, CampaignFields]]:
    """Eligible trigger campaigns listening for this event type, highest priority first."""
    found = []
    for record in live_campaigns():
        trigger = record.spec.get("trigger") or {}
        if record.spec.get("kind") != CampaignKind.TRIGGER or trigger.get("event") != event_type:
            continue
        if eligibility.blockers(record.spec, record.state, now):
            continue
        found.append((record, CampaignFields.model_validate(record.spec)))
    return sorted(found, key=lambda pair: (effective_priority(pair[1]), pair[0].entity_id))


def on_event(
    contact_id: str,
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    now: datetime,
    queue: QueueSend,
    caused_by: str | None = None,
    campaigns: list[tuple[CampaignRecord, CampaignFields]] | None = None,
) -> TriggerReport:
    """Enrol the contact in every trigger campaign this event fires, once per event.

    ``caused_by`` is the campaign an engagement event (``campaign.opened`` ...) is
    about: a campaign never fires on engagement with its own messages.
    """
    report = TriggerReport()
    if occurred_at < now - MAX_EVENT_AGE:
        report.skipped = "event older than a day"
        return report
    campaigns = event_campaigns(event_type, now) if campaigns is None else campaigns
    if not campaigns:
        return report
    try:
        contact = ContactRecord.get(contact_id, consistent_read=True)
    except ContactRecord.DoesNotExist:
        report.skipped = "contact deleted"
        return report
    now_iso = to_iso(now)
    sends: list[dict[str, Any]] = []
    outbox_ids: list[str] = []
    for record, fields in campaigns:
        if record.entity_id == caused_by:
            continue
        if not targeted_among(fields.audience_type, fields.targeting, [contact]):
            continue
        existing = store.get(record.entity_id, contact_id)
        if existing is not None and existing.occurrence == event_id:
            report.repeated.append(record.entity_id)
            continue
        priority = effective_priority(fields)
        enrolment = Enrolment(contact_id, event_id, previous=existing.occurrence if existing else None, mark_fired=True)

        result = store.enrol(
            record.entity_id,
            [enrolment],
            sends_of(record.entity_id, priority, now_iso),
            f"trigger#{record.entity_id}#{event_id}",
            now_iso,
        )
        if result.enrolled:
            report.fired.append(record.entity_id)
            sends += result.sends
            outbox_ids += result.outbox_ids
            stats.add_stats(f"campaign#{record.entity_id}", "total", {"enrolled": 1}, {"last_trigger": now_iso})
            stats.add_stats(f"campaign#{record.entity_id}", f"day#{now_iso[:10]}", {"enrolled": 1})
        else:
            report.repeated.append(record.entity_id)
    if sends:
        queue(delivery_messages(contact_id, sends))
        store.delete_outbox(outbox_ids)
    return report
