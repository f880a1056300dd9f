"""Campaigns: define, launch, stop, resume, and report (checklist, test, forecast: ``review``).

Editing a launched campaign is allowed and applies from the next tick (seed
000: "future campaign executions will use the updated audience criteria").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pynamodb.exceptions import PutError

from herald import clock
from herald.campaigns import alerts, guardrails, review
from herald.campaigns.model import (
    Campaign,
    CampaignFields,
    CampaignIn,
    CampaignPatch,
    LaunchIn,
    State,
    effective_priority,
)
from herald.contacts.service import field_errors
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import Conflict, NotFound, StaleVersion, ValidationFailed, split_field
from herald.segments import service as segments
from herald.segments.model import GroupType
from herald.store import campaigns as campaign_store
from herald.store import contacts as contact_store
from herald.store import enrolments, stats
from herald.store import groups as group_store
from herald.store.campaigns import ENTITY
from herald.store.contacts import GROUP_LABEL_PREFIX
from herald.store.tables import (
    CampaignRecord,
    CatalogRecord,
    RosterRecord,
    SegmentRecord,
)
from herald.store.transactions import Operation, Unit, commit_units, is_condition_failure, save_new

CAMPAIGN_LABEL = "campaign"


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


def launch(campaign_id: str, data: LaunchIn, resume: bool = False) -> Campaign:
    """Launch (or resume) a campaign: refused with the failing checklist items unless forced."""
    record = _record(campaign_id)
    expected = State.STOPPED if resume else State.DRAFT
    if record.state != expected:
        verb = "resume" if resume else "launch"
        raise Conflict(f"only a {expected.value} campaign can {verb}; this one is {record.state}", state=record.state)
    report = review.checklist(campaign_id)
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
    record.stopped_reason = None
    record.paused_by = None
    if resume:
        record.guardrail_baseline = guardrails.baseline(campaign_id, clock.now())
    else:
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
    record.paused_by = guardrails.OPERATOR
    record.stopped_reason = "stopped by an operator"
    _save(record, state=State.LAUNCHED)
    return to_campaign(record)


# --------------------------------------------------------------------------
# Forecast and statistics
# --------------------------------------------------------------------------


RESPONSE_STATS = ("delivered", "opened", "clicked", "bounced_hard", "bounced_soft", "complaints", "unsubscribed")


def stats_view(campaign_id: str, record: CampaignRecord | None = None) -> dict[str, Any]:
    """The campaign's statistics and In-Campaign % (from the last tick's figures)."""
    rows = stats.read_stats(f"campaign#{campaign_id}")
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
        # what came back from the providers and the readers (SES events, unsubscribe links)
        **{name: int(total.get(name, 0)) for name in RESPONSE_STATS},
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
        stopped_reason=record.stopped_reason,
        paused_by=record.paused_by,
        launch=record.launch,
        created_at=record.created_at,
        updated_at=record.updated_at,
        version=int(record.version or 0),
        stats=stats,
    )


def _record(campaign_id: str) -> CampaignRecord:
    return campaign_store.require(campaign_id)


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
        current = campaign_store.get(record.entity_id)
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
        if error["field"] in ("body", "", "row"):  # field_errors names a model-level error "row"
            field, problem = split_field(error["problem"])
            located.append({"field": field, "problem": problem})
        else:
            located.append(error)
    return located


def _sync_subscribers(campaign_id: str, emails: list[str], services: Services) -> None:
    if services.notifier is not None:
        services.notifier.sync_subscribers(campaign_id, emails)
