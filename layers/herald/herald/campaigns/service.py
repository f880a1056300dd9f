"""Campaigns: define, check, test, forecast, launch, stop, resume, and report.

Editing a launched campaign is allowed and applies from the next tick (seed
000: "future campaign executions will use the updated audience criteria").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from pynamodb.exceptions import PutError, UpdateError

from herald import clock
from herald.campaigns import alerts, eligibility
from herald.campaigns.model import (
    CHANNEL_ACTIONS,
    Campaign,
    CampaignFields,
    CampaignIn,
    CampaignPatch,
    LaunchIn,
    State,
    effective_priority,
    local_moment,
    parse_local_time,
)
from herald.campaigns.targeting import explain_contact, matching_ids, membership_keys_needed, targeted_among
from herald.campaigns.tick import DAY_TRIGGER_INDEX
from herald.contacts.service import field_errors
from herald.cursor import decode_cursor, encode_cursor
from herald.delivery.render import personalisation, render
from herald.delivery.sender import history as sender_history
from herald.errors import Conflict, NotFound, StaleVersion, ValidationFailed, split_field
from herald.policy import engine
from herald.policy.service import load_policies
from herald.segments import service as segments
from herald.segments.evaluation import SOFT_BOUNCE_LIMIT
from herald.segments.model import GroupType
from herald.store import contacts as contact_store
from herald.store import enrolments
from herald.store import groups as group_store
from herald.store.contacts import GROUP_LABEL_PREFIX
from herald.store.tables import (
    CampaignRecord,
    CampaignTestRecord,
    CatalogRecord,
    ContactRecord,
    MembershipRecord,
    RosterRecord,
    SegmentRecord,
)
from herald.store.transactions import Operation, Unit, commit_units, is_condition_failure, save_new

ENTITY = "campaign"
CAMPAIGN_LABEL = "campaign"
FORECAST_DAYS = 7
FORECAST_SAMPLE = 500

# How far back contact-policy history is read for a test or forecast (the longest cap window).
HISTORY_DAYS = 31


@dataclass
class Services:
    """What the campaign routes need from outside: the alerts topic's subscriptions."""

    notifier: alerts.Notifier | None = None


# --------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------


def create(data: CampaignIn, services: Services) -> Campaign:
    fields = CampaignFields.model_validate(data.model_dump(exclude={"id"}))
    _check_references(fields)
    if data.id and enrolments.ever_enrolled(data.id):
        # Its enrolments outlive a deleted campaign; a new one under the id would inherit them.
        raise Conflict(f"campaign id {data.id} was used by a deleted campaign; choose another id", id=data.id)
    now = clock.now_iso()
    record = CampaignRecord(
        ENTITY,
        data.id or uuid.uuid4().hex[:16],
        name=fields.name,
        spec=fields.model_dump(mode="json"),
        state=State.DRAFT.value,
        created_at=now,
        updated_at=now,
    )
    group_id = fields.targeting.group_id
    if group_id is None:
        save_new(record, "campaign")
    else:
        new = Operation("put", record, CAMPAIGN_LABEL, condition=CampaignRecord.entity_id.does_not_exist())
        _commit_with_group_refs(record, new, added=group_id, removed=None)
    _sync_subscribers(record.entity_id, fields.alert_subscribers, services)
    return to_campaign(record)


def get(campaign_id: str, with_stats: bool = True) -> Campaign:
    record = _record(campaign_id)
    return to_campaign(record, stats_view(campaign_id, record) if with_stats else None)


def list_campaigns(cursor: str | None, limit: int) -> tuple[list[Campaign], str | None]:
    """A page of campaigns with each one's In-Campaign % (the list view of seed 001)."""
    state = decode_cursor(cursor, "campaigns")

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return CampaignRecord.query(ENTITY, limit=size, last_evaluated_key=last_key)

    records, next_state = contact_store.query_pages([page], state, limit)
    return [to_campaign(r, stats_view(r.entity_id, r)) for r in records], encode_cursor(next_state, "campaigns")


def update(campaign_id: str, patch: CampaignPatch, services: Services, if_match: int | None = None) -> Campaign:
    record = _record(campaign_id)
    if if_match is not None and if_match != record.version:
        raise StaleVersion(ENTITY, campaign_id, int(record.version or 0))
    merged = {**record.spec, **patch.model_dump(mode="json", exclude_unset=True)}
    try:
        fields = CampaignFields.model_validate(merged)
    except ValidationError as exc:
        raise ValidationFailed(_located(field_errors(exc))) from exc
    _check_references(fields)
    if record.state == State.LAUNCHED and fields.targeting.audience_id:
        segments.lock_audience(fields.targeting.audience_id, campaign_id)
    before = (record.spec.get("targeting") or {}).get("group_id")
    record.name = fields.name
    record.spec = fields.model_dump(mode="json")
    record.updated_at = clock.now_iso()
    after = fields.targeting.group_id
    if before == after:
        _save(record)
    else:
        _commit_with_group_refs(record, Operation("put", record, CAMPAIGN_LABEL), added=after, removed=before)
    _sync_subscribers(campaign_id, fields.alert_subscribers, services)
    return to_campaign(record)


def delete(campaign_id: str, services: Services) -> None:
    """Delete a campaign that is not running; its enrolment history stays for reporting."""
    record = _record(campaign_id)
    if record.state == State.LAUNCHED:
        raise Conflict("stop the campaign before deleting it", state=record.state)
    group_id = (record.spec.get("targeting") or {}).get("group_id")
    gone = Operation("delete", record, CAMPAIGN_LABEL, condition=CampaignRecord.state != State.LAUNCHED.value)
    _commit_with_group_refs(record, gone, added=None, removed=group_id)
    for name in (f"campaign#{campaign_id}", f"campaign#{campaign_id}#exited"):
        with RosterRecord.batch_write() as batch:
            for bucket in RosterRecord.query(enrolments.roster_key(name)):
                batch.delete(bucket)
    _sync_subscribers(campaign_id, [], services)


# --------------------------------------------------------------------------
# Checklist, test, launch, stop, resume
# --------------------------------------------------------------------------


def checklist(campaign_id: str) -> dict[str, Any]:
    """Seed 001's launch checklist, each item with whether it passes and why."""
    record = _record(campaign_id)
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


def test(campaign_id: str, contact_id: str, services: Services) -> dict[str, Any]:
    """What the campaign would do for one contact now, and what would hold it back."""
    record = _record(campaign_id)
    fields = CampaignFields.model_validate(record.spec)
    contact_record = _contact(contact_id)
    contact = contact_store.from_record(contact_record).model_dump(mode="json")
    now = clock.now()
    keys = membership_keys_needed(fields.targeting)
    held = {m.group_key for m in MembershipRecord.batch_get([(k, contact_id) for k in keys])} if keys else set()
    view = {**contact, "group_ids": contact.get("group_ids") or [], "segment_ids": contact_record.segment_ids or set()}
    view["badge_ids"] = contact_record.badge_ids or set()
    targeting = explain_contact(fields.audience_type, fields.targeting, view, held)
    enrolment = enrolments.get(campaign_id, contact_id)
    sends = _would_send(record, fields, contact, now, services)
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


def _would_send(
    record: CampaignRecord, fields: CampaignFields, contact: dict[str, Any], now: datetime, services: Services
) -> list[dict[str, Any]]:
    campaign_view = {"id": record.entity_id, "name": fields.name}
    person = personalisation(contact)
    zone = ZoneInfo(contact.get("time_zone") or "UTC")
    policies = load_policies()
    history = sender_history(contact["contact_id"], now - timedelta(days=HISTORY_DAYS))
    out = []
    for index, action in enumerate(fields.actions):
        data = action.model_dump(mode="json")
        if action.type in CHANNEL_ACTIONS:
            rendered = {
                k: render(v, person, campaign_view)
                for k, v in data.items()
                if k in ("subject", "body", "text", "title")
            }
            held = _holds(contact, action.type)
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


def _holds(contact: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    """Consent and suppression holds on one channel (the sender checks them again at send time)."""
    holds = []
    consent = (contact.get("consent") or {}).get(channel) or {}
    if not consent.get("granted"):
        holds.append({"by": "consent", "reason": f"no {channel} consent"})
    bounce = contact.get("bounce") or {}
    if channel == "email" and bounce.get("hard"):
        holds.append({"by": "suppression", "reason": "hard bounce"})
    elif channel == "email" and int(bounce.get("soft_count") or 0) >= SOFT_BOUNCE_LIMIT:
        holds.append({"by": "suppression", "reason": f"{bounce.get('soft_count')} soft bounces"})
    address = {"email": contact.get("email"), "sms": contact.get("phone")}.get(channel, "push")
    if channel == "push":
        address = (contact.get("attributes") or {}).get("push_endpoint_arn")
    if not address:
        holds.append({"by": "address", "reason": f"no {channel} address"})
    return holds


def launch(campaign_id: str, data: LaunchIn, resume: bool = False) -> Campaign:
    """Launch (or resume) a campaign: refused with the failing checklist items unless forced."""
    record = _record(campaign_id)
    expected = State.STOPPED if resume else State.DRAFT
    if record.state != expected:
        verb = "resume" if resume else "launch"
        raise Conflict(f"only a {expected.value} campaign can {verb}; this one is {record.state}", state=record.state)
    report = checklist(campaign_id)
    failing = [i for i in report["items"] if not i["ok"]]
    if failing and not resume and not data.force:
        raise Conflict(
            "the launch checklist has failing items; fix them or launch with force and a reason",
            failing=failing,
        )
    fields = CampaignFields.model_validate(record.spec)
    if fields.targeting.audience_id:
        segments.lock_audience(fields.targeting.audience_id, campaign_id)
    now = clock.now_iso()
    record.state = State.LAUNCHED.value
    record.live_type = "campaign"
    record.stopped_at = None
    if not resume:
        record.launched_at = now
        record.launch = {
            "at": now,
            "forced": bool(failing),
            "reason": data.reason if failing else None,
            "failing": [i["item"] for i in failing],
        }
    _save(record, state=expected)
    return to_campaign(record)


def stop(campaign_id: str) -> Campaign:
    record = _record(campaign_id)
    if record.state != State.LAUNCHED:
        raise Conflict(f"only a Launched campaign can stop; this one is {record.state}", state=record.state)
    record.state = State.STOPPED.value
    record.live_type = None
    record.stopped_at = clock.now_iso()
    _save(record, state=State.LAUNCHED)
    return to_campaign(record)


# --------------------------------------------------------------------------
# Forecast and statistics
# --------------------------------------------------------------------------


def forecast(campaign_id: str, services: Services) -> dict[str, Any]:
    """Expected sends per day for the next 7 days, with consent, caps and quiet hours applied.

    Audience campaigns: the contacts matching now but not yet enrolled enter at
    the next tick; a sample of them (up to 500) is run through the same checks
    as a send (consent, suppression, contact policy over their real message
    history) and the outcome scaled to the whole. Deferred sends land on the
    day of their slot; sends that would expire are counted as such. Date
    triggers count the birthdays or anniversaries of each day. Event triggers
    are forecast from their own last 7 days of enrolments.
    """
    record = _record(campaign_id)
    fields = CampaignFields.model_validate(record.spec)
    now = clock.now()
    days = [(now + timedelta(days=d)).date().isoformat() for d in range(FORECAST_DAYS)]
    per_day = {d: {"sends": 0.0, "deferred_in": 0.0} for d in days}
    totals = {"expired": 0.0, "held_back": 0.0}
    projection = _Projection(fields, now, per_day, totals)
    basis: dict[str, Any]
    if fields.trigger and fields.trigger.event:
        since = (now - timedelta(days=7)).date().isoformat()
        rows = enrolments.read_stats(f"campaign#{campaign_id}", "day#")
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
        self, fields: CampaignFields, now: datetime, per_day: dict[str, dict[str, float]], totals: dict[str, float]
    ) -> None:
        self.fields = fields
        self.now = now
        self.per_day = per_day
        self.totals = totals
        self.policies = load_policies()
        self.channels = [a.type for a in fields.actions if a.type in CHANNEL_ACTIONS]

    def add(self, record: ContactRecord, start: datetime, scale: float) -> None:
        contact = contact_store.from_record(record).model_dump(mode="json")
        history = sender_history(record.contact_id, self.now - timedelta(days=HISTORY_DAYS))
        zone = ZoneInfo(contact.get("time_zone") or "UTC")
        fields = self.fields
        for channel in self.channels:
            if _holds(contact, channel):
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


def stats_view(campaign_id: str, record: CampaignRecord | None = None) -> dict[str, Any]:
    """The campaign's statistics and In-Campaign % (from the last tick's figures)."""
    rows = enrolments.read_stats(f"campaign#{campaign_id}")
    total = rows.get("total", {})
    matching = int(total.get("matching", 0))
    active = int(total.get("active", 0))
    suppressed = {k.removeprefix("suppressed_"): int(v) for k, v in total.items() if k.startswith("suppressed_")}
    expected = float((record.spec if record else {}).get("expected_in_campaign_pct", 90.0))
    pct = round(100 * active / matching, 2) if matching else None
    return {
        "matching": matching,
        "in_campaign": active,
        "in_campaign_pct": pct,
        "expected_in_campaign_pct": expected,
        "below_expected": pct is not None and pct < expected,
        "enrolled": int(total.get("enrolled", 0)),
        "exited": int(total.get("exited", 0)),
        "sent": int(total.get("sent", 0)),
        "deferred": int(total.get("deferred", 0)),
        "expired": int(total.get("expired", 0)),
        "suppressed": int(total.get("suppressed", 0)),
        "suppressed_by_reason": suppressed,
        "failed": int(total.get("failed", 0)),
        "last_tick": total.get("last_tick"),
        "days": {k[4:]: v for k, v in sorted(rows.items()) if k.startswith("day#")},
    }


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def to_campaign(record: CampaignRecord, stats: dict[str, Any] | None = None) -> Campaign:
    spec = record.spec
    return Campaign(
        id=record.entity_id,
        **{k: v for k, v in spec.items() if k in CampaignFields.model_fields},
        effective_priority=effective_priority(spec),
        state=State(record.state),
        launched_at=record.launched_at,
        stopped_at=record.stopped_at,
        launch=record.launch,
        created_at=record.created_at,
        updated_at=record.updated_at,
        version=int(record.version or 0),
        stats=stats,
    )


def _record(campaign_id: str) -> CampaignRecord:
    try:
        return CampaignRecord.get(ENTITY, campaign_id, consistent_read=True)
    except CampaignRecord.DoesNotExist as exc:
        raise NotFound(f"campaign {campaign_id} does not exist", id=campaign_id) from exc


def _contact(contact_id: str) -> ContactRecord:
    try:
        return ContactRecord.get(contact_id, consistent_read=True)
    except ContactRecord.DoesNotExist as exc:
        raise NotFound(f"contact {contact_id} does not exist", id=contact_id) from exc


def _commit_with_group_refs(
    record: CampaignRecord, operation: Operation, added: str | None, removed: str | None
) -> None:
    """Write the campaign and its customer-group references in one transaction.

    A campaign targeting a group is one of its users (``ref#group#<id>``, the group's
    ``ref_count``), so the group cannot be deleted under it without ``force``.
    """
    referrer = f"campaign#{record.entity_id}"
    operations = [operation]
    if added:
        operations += group_store.reference_unit(added, referrer, add=True).operations
    if removed:
        operations += group_store.reference_unit(removed, referrer, add=False).operations
    failure = commit_units([Unit(tag=record.entity_id, operations=operations)]).failures.get(0)
    if failure is None:
        return
    if CAMPAIGN_LABEL in failure.labels:
        current = _record_or_none(record.entity_id)
        if operation.verb == "put" and operation.condition is not None:
            raise Conflict(f"campaign {record.entity_id} already exists", id=record.entity_id)
        if current is None:
            raise NotFound(f"campaign {record.entity_id} does not exist", id=record.entity_id)
        if operation.verb == "delete":
            raise Conflict("the campaign was launched meanwhile", id=record.entity_id)
        raise StaleVersion(ENTITY, record.entity_id, int(current.version or 0))
    if added and f"{GROUP_LABEL_PREFIX}{added}" in failure.labels:
        raise ValidationFailed.one("targeting.group_id", f"customer group {added} does not exist or is being deleted")
    if removed and group_store.REF_LABEL in failure.labels:
        # The old group was force-deleted (its references dropped): nothing to release.
        _commit_with_group_refs(record, operation, added=added, removed=None)
        return
    raise Conflict(failure.message)


def _record_or_none(campaign_id: str) -> CampaignRecord | None:
    try:
        return CampaignRecord.get(ENTITY, campaign_id, consistent_read=True)
    except CampaignRecord.DoesNotExist:
        return None


def _save(record: CampaignRecord, state: State | None = None) -> None:
    """Save under the version condition (and the expected state, for launch/stop races)."""
    condition = CampaignRecord.state == state.value if state else None
    try:
        record.save(condition=condition)
    except PutError as exc:
        if is_condition_failure(exc):
            current = _record(record.entity_id)
            raise StaleVersion(ENTITY, record.entity_id, int(current.version or 0)) from exc
        raise


def _check_references(fields: CampaignFields) -> None:
    """Every group, segment, audience, badge and form the targeting names must exist."""
    targeting = fields.targeting
    problems = []
    if targeting.group_id and not _exists("group", targeting.group_id):
        problems.append(
            {"field": "targeting.group_id", "problem": f"customer group {targeting.group_id} does not exist"}
        )
    for field, group_type, ids in (
        ("targeting.segment_ids", GroupType.SEGMENT, targeting.segment_ids),
        ("targeting.badge_ids", GroupType.BADGE, targeting.badge_ids),
        ("targeting.audience_id", GroupType.AUDIENCE, [targeting.audience_id] if targeting.audience_id else []),
    ):
        for definition_id in ids:
            try:
                SegmentRecord.get(group_type.value, definition_id, attributes_to_get=["entity_id"])
            except SegmentRecord.DoesNotExist:
                problems.append({"field": field, "problem": f"{group_type.value} {definition_id} does not exist"})
    for form_id in targeting.form_ids:
        if not _exists("form", form_id):
            problems.append({"field": "targeting.form_ids", "problem": f"form {form_id} does not exist"})
    if problems:
        raise ValidationFailed(problems)


def _exists(entity_type: str, entity_id: str) -> bool:
    try:
        CatalogRecord.get(entity_type, entity_id, attributes_to_get=["entity_id"])
    except CatalogRecord.DoesNotExist:
        return False
    return True


def _located(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    """Cross-field errors say their field at the start of the message; move it to ``field``."""
    located = []
    for error in errors:
        if error["field"] in ("body", ""):
            field, problem = split_field(error["problem"])
            located.append({"field": field, "problem": problem})
        else:
            located.append(error)
    return located


def _sync_subscribers(campaign_id: str, emails: list[str], services: Services) -> None:
    if services.notifier is not None:
        services.notifier.sync_subscribers(campaign_id, emails)
