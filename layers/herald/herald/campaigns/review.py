"""What a campaign would do, before it does it: the launch checklist, a test on one contact, a forecast.

All three apply the same rules as the tick and the sender (targeting, eligibility,
consent and suppression, contact policy and priority), so what they show is what
will happen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pynamodb.exceptions import UpdateError

from herald import clock
from herald.campaigns import eligibility
from herald.campaigns.model import (
    CHANNEL_ACTIONS,
    CampaignFields,
    effective_priority,
    local_moment,
    parse_local_time,
)
from herald.campaigns.targeting import explain_contact, matching_ids, membership_keys_needed, targeted_among
from herald.campaigns.tick import DAY_TRIGGER_INDEX
from herald.contacts.model import Contact
from herald.delivery.render import personalisation, render
from herald.delivery.sender import history as sender_history
from herald.delivery.sender import suppression_reason
from herald.errors import NotFound
from herald.policy import engine
from herald.policy.service import load_policies
from herald.store import campaigns as campaign_store
from herald.store import contacts as contact_store
from herald.store import enrolments, stats
from herald.store import suppressions as suppression_store
from herald.store.campaigns import ENTITY
from herald.store.tables import CampaignRecord, CampaignTestRecord, ContactRecord, MembershipRecord
from herald.store.transactions import is_condition_failure

FORECAST_DAYS = 7
FORECAST_SAMPLE = 500
# How far back contact-policy history is read for a test or forecast (the longest cap window).
HISTORY_DAYS = 31
# The sender's hold reasons, by what the test shows them as (anything else is a suppression).
_HOLD_KIND = {"no_consent": "consent", "no_address": "address"}


def checklist(campaign_id: str) -> dict[str, Any]:
    """Seed 001's launch checklist, each item with whether it passes and why."""
    record = campaign_store.require(campaign_id)
    fields = CampaignFields.model_validate(record.spec)
    items = [
        _item(
            "name_description",
            bool(fields.name.strip() and fields.description.strip())
            and fields.name.strip().casefold() != fields.description.strip().casefold(),
            "name and description are set and say different things",
        ),
        _target_item(fields),
        _item(
            "actions_content",
            bool(fields.actions),
            f"{len(fields.actions)} action(s): " + ", ".join(a.type for a in fields.actions)
            if fields.actions
            else "no actions: add an email, SMS, push, points or stage action",
        ),
        _tested_item(record),
    ]
    return {"campaign_id": campaign_id, "ready": all(i["ok"] for i in items), "items": items}


def _item(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"item": name, "ok": ok, "detail": detail}


def _target_item(fields: CampaignFields) -> dict[str, Any]:
    count = len(matching_ids(fields.audience_type, fields.targeting))
    return _item("target_rules", count > 0, f"{count} contact(s) match the targeting now")


def _tested_item(record: CampaignRecord) -> dict[str, Any]:
    tested = CampaignTestRecord.get(ENTITY, record.entity_id, consistent_read=True).tested or {}
    if not tested:
        return _item("tested", False, "not tested: POST /campaigns/{id}/test with a sample contact")
    if tested.get("version") != record.version:
        return _item("tested", False, f"tested on version {tested.get('version')}; the campaign changed since")
    return _item("tested", True, f"tested on contact {tested['contact_id']} at {tested['at']}")


def test(campaign_id: str, contact_id: str) -> dict[str, Any]:
    """What the campaign would do for one contact now, and what would hold it back."""
    record = campaign_store.require(campaign_id)
    fields = CampaignFields.model_validate(record.spec)
    contact_record = _contact(contact_id)
    person = contact_store.from_record(contact_record)
    contact = person.model_dump(mode="json")
    now = clock.now()
    keys = membership_keys_needed(fields.targeting)
    held = {m.group_key for m in MembershipRecord.batch_get([(k, contact_id) for k in keys])} if keys else set()
    view = {**contact, "group_ids": contact.get("group_ids") or [], "segment_ids": contact_record.segment_ids or set()}
    view["badge_ids"] = contact_record.badge_ids or set()
    targeting = explain_contact(fields.audience_type, fields.targeting, view, held)
    enrolment = enrolments.get(campaign_id, contact_id)
    sends = _would_send(record, fields, person, now)
    result = {
        "campaign_id": campaign_id,
        "contact_id": contact_id,
        "targeting": targeting,
        "eligibility": {"blockers": eligibility.blockers(record.spec, record.state, now)},
        "enrolment": _enrolment_view(enrolment, fields),
        "priority": effective_priority(fields),
        "actions": sends,
    }
    tested = {
        "version": record.version,
        "contact_id": contact_id,
        "at": clock.to_iso(now),
        "matched": targeting["matches"],
    }
    try:
        CampaignTestRecord(ENTITY, campaign_id).update(
            actions=[CampaignTestRecord.tested.set(tested)], condition=CampaignTestRecord.entity_id.exists()
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            raise NotFound(f"campaign {campaign_id} does not exist", id=campaign_id) from exc
        raise
    return result


def _enrolment_view(record: Any, fields: CampaignFields) -> dict[str, Any]:
    if record is None:
        return {"state": "not enrolled"}
    view = {"state": record.state, "occurrence": record.occurrence, "enrolled_at": record.enrolled_at}
    if record.state == enrolments.EXITED:
        view["exited_at"] = record.exited_at
        view["re_enrols"] = fields.include_previously_treated
    return view


def _would_send(record: CampaignRecord, fields: CampaignFields, person: Contact, now: datetime) -> list[dict[str, Any]]:
    campaign_view = {"id": record.entity_id, "name": fields.name}
    contact = person.model_dump(mode="json")
    suppressed = suppression_store.of_contact(person.contact_id)
    zone = ZoneInfo(contact.get("time_zone") or "UTC")
    policies = load_policies()
    history = sender_history(contact["contact_id"], now - timedelta(days=HISTORY_DAYS))
    out = []
    for index, action in enumerate(fields.actions):
        data = action.model_dump(mode="json")
        if action.type in CHANNEL_ACTIONS:
            rendered = {
                k: render(v, personalisation(contact), campaign_view)
                for k, v in data.items()
                if k in ("subject", "body", "text", "title")
            }
            held = _holds(person, action.type, suppressed, record.entity_id, fields)
            if not held:
                candidate = engine.Candidate(
                    f"{index}", action.type, effective_priority(fields), now, fields.category, fields.campaign_group
                )
                decision = engine.decide([candidate], history, policies, zone, now)[0]
                if decision.outcome != "send":
                    held.append(
                        {
                            "by": "contact_policy",
                            "outcome": decision.outcome,
                            "until": clock.to_iso(decision.at) if decision.at else None,
                            "reason": decision.reason,
                        }
                    )
            out.append(
                {"index": index, "type": action.type, "rendered": rendered, "would_send": not held, "held_back": held}
            )
        else:
            out.append({"index": index, "type": action.type, "would_apply": data, "would_send": True, "held_back": []})
    return out


def _holds(
    contact: Contact, channel: str, suppressed: dict[str, str], campaign_id: str, fields: CampaignFields
) -> list[dict[str, Any]]:
    """What holds a channel send back before any policy: the sender's own check, named by kind."""
    reason = suppression_reason(contact, channel, suppressed, campaign_id, fields.category, fields.campaign_group)
    return [] if reason is None else [{"by": _HOLD_KIND.get(reason, "suppression"), "reason": reason}]


def forecast(campaign_id: str) -> dict[str, Any]:
    """Expected sends per day for the next 7 days, with consent, caps and quiet hours applied.

    Audience campaigns: the contacts matching now but not yet enrolled enter at
    the next tick; a sample of them (up to 500) is run through the same checks
    as a send (consent, suppression, contact policy over their real message
    history) and the outcome scaled to the whole. Deferred sends land on the
    day of their slot; sends that would expire are counted as such. Date
    triggers count the birthdays or anniversaries of each day. Event triggers
    are forecast from their own last 7 days of enrolments.
    """
    record = campaign_store.require(campaign_id)
    fields = CampaignFields.model_validate(record.spec)
    now = clock.now()
    days = [(now + timedelta(days=d)).date().isoformat() for d in range(FORECAST_DAYS)]
    per_day = {d: {"sends": 0.0, "deferred_in": 0.0} for d in days}
    totals = {"expired": 0.0, "held_back": 0.0}
    projection = _Projection(campaign_id, fields, now, per_day, totals)
    basis: dict[str, Any]
    if fields.trigger and fields.trigger.event:
        since = (now - timedelta(days=7)).date().isoformat()
        rows = stats.read_stats(f"campaign#{campaign_id}", "day#")
        recent = sum(int(v.get("enrolled", 0)) for k, v in rows.items() if since <= k[4:] < days[0])
        daily = recent / 7
        channels = [a.type for a in fields.actions if a.type in CHANNEL_ACTIONS]
        for d in days:
            per_day[d]["sends"] = daily * len(channels)
        basis = {"method": "event trigger: last 7 days of enrolments", "per_day": round(daily, 2)}
    elif fields.trigger and fields.trigger.date:
        basis = {"method": f"{fields.trigger.date} of each day, targeting applied", "contacts": 0}
        index = getattr(ContactRecord, DAY_TRIGGER_INDEX[fields.trigger.date])
        send_at = parse_local_time(fields.trigger.send_at)
        for offset in range(FORECAST_DAYS):
            day = (now + timedelta(days=offset)).date()
            kind = fields.audience_type.contact_kind
            ids = [item.contact_id for item in index.query(day.strftime("%m-%d")) if item.kind == kind]
            sample = ids[:FORECAST_SAMPLE]
            records = list(ContactRecord.batch_get(sample))
            targeted = targeted_among(fields.audience_type, fields.targeting, records)
            scale = len(ids) / len(sample) if sample else 0.0
            basis["contacts"] += round(len(targeted) * scale)
            for record_ in records:
                if record_.contact_id in targeted:
                    zone = ZoneInfo(record_.time_zone or "UTC")
                    moment = datetime.combine(day, send_at, zone).astimezone(UTC)
                    projection.add(record_, max(moment, now), scale)
    else:
        newcomers = _newcomers(campaign_id, fields)
        basis = {"method": "matching contacts not yet enrolled, sampled", "newcomers": len(newcomers)}
        sample = sorted(newcomers)[:FORECAST_SAMPLE]
        scale = len(newcomers) / len(sample) if sample else 0.0
        start = _first_send(fields, now)
        for record_ in ContactRecord.batch_get(sample):
            projection.add(record_, start, scale)
    return {
        "campaign_id": campaign_id,
        "basis": basis,
        "days": [
            {"date": d, "sends": round(v["sends"]), "deferred_in": round(v["deferred_in"])} for d, v in per_day.items()
        ],
        "expired": round(totals["expired"]),
        "held_back": round(totals["held_back"]),
    }


class _Projection:
    """Runs sampled contacts' sends through the same checks as the sender, onto forecast days."""

    def __init__(
        self,
        campaign_id: str,
        fields: CampaignFields,
        now: datetime,
        per_day: dict[str, dict[str, float]],
        totals: dict[str, float],
    ) -> None:
        self.campaign_id = campaign_id
        self.fields = fields
        self.now = now
        self.per_day = per_day
        self.totals = totals
        self.policies = load_policies()
        self.channels = [a.type for a in fields.actions if a.type in CHANNEL_ACTIONS]

    def add(self, record: ContactRecord, start: datetime, scale: float) -> None:
        person = contact_store.from_record(record)
        contact = person.model_dump(mode="json")
        suppressed = suppression_store.of_contact(record.contact_id)
        history = sender_history(record.contact_id, self.now - timedelta(days=HISTORY_DAYS))
        zone = ZoneInfo(contact.get("time_zone") or "UTC")
        fields = self.fields
        for channel in self.channels:
            if _holds(person, channel, suppressed, self.campaign_id, fields):
                self.totals["held_back"] += scale
                continue
            candidate = engine.Candidate(
                "forecast", channel, effective_priority(fields), start, fields.category, fields.campaign_group
            )
            decision = engine.decide([candidate], history, self.policies, zone, start)[0]
            if decision.outcome == "expire":
                self.totals["expired"] += scale
                continue
            day = (decision.at or start).date().isoformat()
            if day in self.per_day:
                self.per_day[day]["sends"] += scale
                if decision.outcome == "defer":
                    self.per_day[day]["deferred_in"] += scale


def _newcomers(campaign_id: str, fields: CampaignFields) -> set[str]:
    matching = matching_ids(fields.audience_type, fields.targeting)
    return matching - enrolments.read_roster(f"campaign#{campaign_id}")


def _first_send(fields: CampaignFields, now: datetime) -> datetime:
    """When the first tick would enrol a contact: now, or the campaign's start."""
    start = local_moment(fields.start, fields.time_zone)
    return max(now, start) if start else now


def _contact(contact_id: str) -> ContactRecord:
    try:
        return ContactRecord.get(contact_id, consistent_read=True)
    except ContactRecord.DoesNotExist as exc:
        raise NotFound(f"contact {contact_id} does not exist", id=contact_id) from exc
