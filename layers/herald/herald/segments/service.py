"""Segments, audiences and badges: definitions, members, manual changes, explain.

Selecting members is the recalculation's job (:mod:`herald.segments.recalculation`):
creating a definition with a rule starts a one-target run that fills it;
flexi definitions join the nightly run. This module keeps the rules of the
three types (seed 002): audiences are locked once selected and completely
locked once a launched campaign targets them; segments change only through
their rule or automation; badges carry an icon and may be assigned by hand.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.update import Action

from herald import clock
from herald.contacts.model import is_valid_id
from herald.cursor import decode_cursor, encode_cursor
from herald.dynamodb_json import decode_item
from herald.errors import Conflict, NotFound, StaleVersion, ValidationFailed
from herald.rules.compiler import compile_rule
from herald.rules.model import Rule, RuleError, parse_rule
from herald.rules.reference import Reference
from herald.segments import recalculation
from herald.segments.evaluation import Target, evaluate, exclusion_reason
from herald.segments.model import (
    Definition,
    DefinitionIn,
    DefinitionPatch,
    GroupType,
    ManualChange,
    PreviewIn,
    State,
)
from herald.store import contacts as contact_store
from herald.store import segments as store
from herald.store.tables import AuditRecord, ContactRecord, MembershipRecord, SegmentRecord
from herald.store.transactions import commit_units, is_condition_failure, save_new

FLEXI_OVERRIDE_WARNING = (
    "this {type} is flexi: the next nightly recalculation re-applies its rule and overrides manual and "
    "automation changes; use a non-flexi {type} for membership that automation controls"
)
PREVIEW_SCAN_LIMIT = 20_000
DELETE_BUDGET_S = 20.0

Enqueue = Callable[[list[dict[str, Any]]], None]


@dataclass
class Runner:
    """How the service starts recalculation runs (the queue sender and the number of parts)."""

    enqueue: Enqueue
    parts: int = 4


# --------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------


def create(group_type: GroupType, data: DefinitionIn, runner: Runner) -> Definition:
    """Create a definition; one with a rule starts filling at once (state Filling)."""
    _check_type_rules(group_type, data.rule, data.flexi, data.online, data.icon, creating=True)
    rule = _parsed(data.rule, group_type, None) if data.rule is not None else None
    now = clock.now_iso()
    record = SegmentRecord(
        entity_type=group_type.value,
        entity_id=data.id or uuid.uuid4().hex[:16],
        name=data.name,
        description=data.description,
        rule=data.rule,
        flexi=data.flexi,
        online=data.online,
        icon=data.icon,
        channel=data.channel.value if group_type is GroupType.AUDIENCE else None,
        state=State.FILLING.value if rule else State.READY.value,
        member_count=0,
        live_type=store.FLEXI if data.flexi else None,
        created_at=now,
        updated_at=now,
    )
    save_new(record, group_type.value)
    if rule is not None:
        recalculation.start_run(
            f"fill {group_type.value}", runner.enqueue, runner.parts, [(group_type, record.entity_id)]
        )
    return store.to_definition(record)


def get(group_type: GroupType, group_id: str) -> Definition:
    return store.to_definition(_record(group_type, group_id))


def list_definitions(group_type: GroupType, cursor: str | None, limit: int) -> tuple[list[Definition], str | None]:
    listing = group_type.plural
    state = decode_cursor(cursor, listing)

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return SegmentRecord.query(group_type.value, limit=size, last_evaluated_key=last_key)

    records, next_state = contact_store.query_pages([page], state, limit)
    return [store.to_definition(r) for r in records], encode_cursor(next_state, listing)


def update(
    group_type: GroupType, group_id: str, patch: DefinitionPatch, runner: Runner, if_match: int | None = None
) -> Definition:
    """Change a definition; a new rule is re-applied by a run (flexi ones also nightly)."""
    record = _record(group_type, group_id)
    if if_match is not None and if_match != record.version:
        raise StaleVersion(group_type.value, group_id, int(record.version or 0))
    fields = patch.model_fields_set
    if group_type is GroupType.AUDIENCE:
        _check_unlocked(record)
        if "rule" in fields:
            raise Conflict(
                "an audience's selection is locked once created; duplicate it or add and remove contacts by hand",
                field="rule",
            )
    flexi = patch.flexi if "flexi" in fields and patch.flexi is not None else bool(record.flexi)
    online = patch.online if "online" in fields and patch.online is not None else bool(record.online)
    rule_source = patch.rule if "rule" in fields else record.rule
    icon = patch.icon if "icon" in fields else record.icon
    _check_type_rules(group_type, rule_source, flexi, online, icon, creating=False)
    new_rule = "rule" in fields and patch.rule != record.rule
    if new_rule and patch.rule is not None:
        _parsed(patch.rule, group_type, group_id)
    # Only the edited fields are written: member counts change concurrently (unversioned counters).
    actions: list[Action] = [SegmentRecord.updated_at.set(clock.now_iso())]
    if "name" in fields and patch.name is not None:
        actions.append(SegmentRecord.name.set(patch.name))
    if "description" in fields:
        actions.append(_set_or_remove(SegmentRecord.description, patch.description))
    if "rule" in fields:
        actions.append(_set_or_remove(SegmentRecord.rule, rule_source))
    if "flexi" in fields:
        actions.append(SegmentRecord.flexi.set(flexi))
        actions.append(_set_or_remove(SegmentRecord.live_type, store.FLEXI if flexi else None))
    if "online" in fields:
        actions.append(SegmentRecord.online.set(online))
    if "icon" in fields:
        actions.append(_set_or_remove(SegmentRecord.icon, icon))
    try:
        # Conditional on the version read (pynamodb adds it); a Locked audience must still be unlocked.
        condition = SegmentRecord.state != State.LOCKED.value if group_type is GroupType.AUDIENCE else None
        record.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if is_condition_failure(exc):
            raise StaleVersion(group_type.value, group_id, None) from exc
        raise
    if new_rule and rule_source is not None:
        recalculation.start_run(
            f"rule changed on {group_type.value}", runner.enqueue, runner.parts, [(group_type, group_id)]
        )
    return store.to_definition(record)


def _set_or_remove(attribute: Any, value: Any) -> Action:
    return attribute.set(value) if value is not None else attribute.remove()


def delete(group_type: GroupType, group_id: str) -> bool:
    """Remove members and then the definition; False if members remain (call again)."""
    record = _record(group_type, group_id)
    if group_type is GroupType.AUDIENCE:
        _check_unlocked(record)
    users = _referencing_rules(group_type, group_id)
    if users:
        raise Conflict(f"{group_type.value} {group_id} is used by the rules of " + ", ".join(users), used_by=users)
    if record.live_type is not None:
        record.update(actions=[SegmentRecord.live_type.remove()], add_version_condition=False)
    deadline = time.monotonic() + DELETE_BUDGET_S
    while time.monotonic() < deadline:
        page, _ = store.members(group_type, group_id, None, 100)
        if not page:
            record.delete(add_version_condition=False)
            return True
        _manual(group_type, group_id, [m.contact_id for m in page], "deletion", None, add=False)
    return False


def duplicate(group_id: str, name: str, actor: str) -> Definition:
    """Copy an audience (definition and current members) under a new name."""
    source = _record(GroupType.AUDIENCE, group_id)
    if source.state == State.FILLING.value:
        raise Conflict(f"audience {group_id} is still being selected; duplicate it when it is Ready")
    now = clock.now_iso()
    copy = SegmentRecord(
        entity_type=GroupType.AUDIENCE.value,
        entity_id=uuid.uuid4().hex[:16],
        name=name,
        description=source.description,
        rule=source.rule,
        channel=source.channel,
        state=State.READY.value,
        member_count=0,
        excluded=source.excluded,
        duplicated_from=group_id,
        created_at=now,
        updated_at=now,
    )
    copy.save(condition=SegmentRecord.entity_id.does_not_exist())
    start: dict[str, Any] | None = None
    while True:
        page, start = store.members(GroupType.AUDIENCE, group_id, start, 100)
        changes = [
            store.MembershipChange(
                m.contact_id,
                None,
                m.kind or "",
                m.status or "",
                entered=[(GroupType.AUDIENCE, copy.entity_id)],
                source="duplicate",
                actor=actor,
            )
            for m in page
        ]
        report = commit_units([store.change_unit(i, c, now) for i, c in enumerate(changes)])
        if report.failures:
            raise Conflict(
                f"the copy {copy.entity_id} is incomplete: {len(report.failures)} members could not be copied; "
                "delete it and duplicate again",
                id=copy.entity_id,
            )
        if not start:
            break
    return get(GroupType.AUDIENCE, copy.entity_id)


def lock_audience(group_id: str, campaign_id: str) -> Definition:
    """Lock an audience completely: a launched campaign targets it (idempotent per campaign)."""
    record = _record(GroupType.AUDIENCE, group_id)
    if record.state == State.LOCKED.value:
        if record.locked_by == campaign_id:
            return store.to_definition(record)
        raise Conflict(f"audience {group_id} is locked by campaign {record.locked_by}", locked_by=record.locked_by)
    if record.state != State.READY.value:
        raise Conflict(f"audience {group_id} is still being selected", state=record.state)
    try:
        record.update(
            actions=[SegmentRecord.state.set(State.LOCKED.value), SegmentRecord.locked_by.set(campaign_id)],
            condition=SegmentRecord.state == State.READY.value,
        )
    except UpdateError as exc:
        raise Conflict(f"audience {group_id} changed meanwhile; retry") from exc
    return store.to_definition(record)


# --------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------


def members(
    group_type: GroupType, group_id: str, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    _record(group_type, group_id)
    listing = f"{group_type.plural}/{group_id}/members"
    state = decode_cursor(cursor, listing)

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return MembershipRecord.query(
            store.membership_key(group_type, group_id), limit=size, last_evaluated_key=last_key
        )

    records, next_state = contact_store.query_pages([page], state, limit)
    items = [
        {"contact_id": r.contact_id, "added_at": r.added_at, "source": r.source, "actor": r.actor} for r in records
    ]
    return items, encode_cursor(next_state, listing)


def change_members(group_type: GroupType, group_id: str, change: ManualChange, add: bool) -> dict[str, Any]:
    """Add or remove contacts by hand or by automation; per-contact outcomes.

    Audiences need a reason and record an audit entry per change; flexi
    segments and badges accept the change with a warning that the nightly run
    overrides it (seed 002).
    """
    record = _record(group_type, group_id)
    warnings: list[str] = []
    if group_type is GroupType.AUDIENCE:
        _check_unlocked(record)
        if record.state == State.FILLING.value:
            raise Conflict(f"audience {group_id} is still being selected; try again when it is Ready")
        if not change.reason:
            raise ValidationFailed.one("reason", "is required for manual changes to an audience (the audit trail)")
    elif record.flexi:
        warnings.append(FLEXI_OVERRIDE_WARNING.format(type=group_type.value))
    ids = list(dict.fromkeys(change.contact_ids))
    results = _manual(group_type, group_id, ids, change.actor, change.reason, add=add)
    return {"results": results, "warnings": warnings, "member_count": get(group_type, group_id).member_count}


def automation_change(group_id: str, contact_ids: list[str], add: bool) -> dict[str, str]:
    """A flow's ADD TO / REMOVE FROM SEGMENT step: per-contact outcomes, idempotent.

    Like a workflow's change (seed 002), a flexi segment's next nightly run may undo it.
    Raises NotFound when the segment is gone.
    """
    _record(GroupType.SEGMENT, group_id)
    results = _manual(GroupType.SEGMENT, group_id, list(dict.fromkeys(contact_ids)), "flow", None, add=add)
    return {r["contact_id"]: r["outcome"] for r in results}


def _manual(
    group_type: GroupType, group_id: str, ids: list[str], actor: str, reason: str | None, add: bool
) -> list[dict[str, Any]]:
    source = "manual" if group_type is not GroupType.SEGMENT else "automation"
    outcomes: dict[str, str] = {}
    for _ in range(recalculation.CONFLICT_RETRIES):
        pending = [i for i in ids if i not in outcomes]
        if not pending:
            break
        items = _raw_contacts(pending)
        changes: list[store.MembershipChange] = []
        now = clock.now_iso()
        for contact_id in pending:
            item = items.get(contact_id)
            if item is None:
                outcomes[contact_id] = "not_found"
                continue
            built = _manual_change(group_type, group_id, item, add, source, actor, reason, now)
            if built is None:
                outcomes[contact_id] = "already_member" if add else "not_member"
            else:
                changes.append(built)
        report = commit_units([store.change_unit(i, c, now) for i, c in enumerate(changes)])
        for index, built in enumerate(changes):
            failure = report.failures.get(index)
            if failure is None:
                outcomes[built.contact_id] = "added" if add else "removed"
            elif store.membership_label(group_type, group_id) in failure.labels:
                outcomes[built.contact_id] = "already_member" if add else "not_member"
            elif store.counter_label(group_type, group_id) in failure.labels:
                raise NotFound(f"{group_type.value} {group_id} was deleted", id=group_id)
    return [{"contact_id": i, "outcome": outcomes.get(i, "conflict")} for i in ids]


def _manual_change(
    group_type: GroupType,
    group_id: str,
    item: dict[str, Any],
    add: bool,
    source: str,
    actor: str,
    reason: str | None,
    now: str,
) -> store.MembershipChange | None:
    contact_id = item["contact_id"]["S"]
    kind, status = item.get("kind", {}).get("S", ""), item.get("status", {}).get("S", "")
    audit = []
    if group_type is GroupType.AUDIENCE:
        audit.append(
            AuditRecord(
                entity_type=f"audit#{store.membership_key(group_type, group_id)}",
                # Wall-clock nanoseconds order changes made within the same millisecond.
                entity_id=f"{now}#{time.time_ns():020d}",
                action="add" if add else "remove",
                contact_id=contact_id,
                actor=actor,
                reason=reason,
                at=now,
            )
        )
        moves: list[tuple[GroupType, str]] = [(group_type, group_id)]
        return store.MembershipChange(
            contact_id,
            None,
            kind,
            status,
            entered=moves if add else [],
            exited=[] if add else moves,
            source=source,
            actor=actor,
            audit=audit,
        )
    attribute = "segment_ids" if group_type is GroupType.SEGMENT else "badge_ids"
    current = set(item.get(attribute, {}).get("SS", ()))
    if (group_id in current) == add:
        return None
    new = current | {group_id} if add else current - {group_id}
    changed: list[tuple[GroupType, str]] = [(group_type, group_id)]
    return store.MembershipChange(
        contact_id,
        int(item["version"]["N"]),
        kind,
        status,
        segment_ids=new if group_type is GroupType.SEGMENT else None,
        badge_ids=new if group_type is GroupType.BADGE else None,
        entered=changed if add else [],
        exited=[] if add else changed,
        source=source,
        actor=actor,
    )


def audit_trail(group_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Manual changes to an audience, newest first."""
    _record(GroupType.AUDIENCE, group_id)
    partition = f"audit#{store.membership_key(GroupType.AUDIENCE, group_id)}"
    return [
        {"at": r.at, "action": r.action, "contact_id": r.contact_id, "actor": r.actor, "reason": r.reason}
        for r in AuditRecord.query(partition, scan_index_forward=False, limit=limit)
    ]


# --------------------------------------------------------------------------
# Preview, explain, memberships, online recalculation
# --------------------------------------------------------------------------


def preview(data: PreviewIn) -> dict[str, Any]:
    """How many contacts an unsaved rule matches now, and a sample of them.

    Up to 20,000 contacts are evaluated; beyond that the size is extrapolated
    from the table's item count and marked as an estimate.
    """
    rule = _parsed(data.rule, GroupType.SEGMENT, None)
    predicate = compile_rule(rule, clock.now())
    connection = ContactRecord._get_connection()
    matched = scanned = 0
    sample: list[str] = []
    start: Any = None
    while scanned < PREVIEW_SCAN_LIMIT:
        page = connection.scan(limit=min(1000, PREVIEW_SCAN_LIMIT - scanned), exclusive_start_key=start)
        for item in page.get("Items", []):
            scanned += 1
            if predicate(item):
                matched += 1
                if len(sample) < data.sample:
                    sample.append(item["contact_id"]["S"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return {"size": matched, "estimated": False, "scanned": scanned, "sample": sample}
    total = int(connection.describe_table().get("ItemCount", scanned)) or scanned
    estimate = round(matched * max(total, scanned) / scanned) if scanned else 0
    return {"size": estimate, "estimated": True, "scanned": scanned, "sample": sample}


def explain(group_type: GroupType, group_id: str, contact_id: str) -> dict[str, Any]:
    """Every condition of the rule for one contact, with its verdict and the value it saw."""
    record = _record(group_type, group_id)
    item = _raw_contacts([contact_id]).get(contact_id)
    if item is None:
        raise NotFound(f"contact {contact_id} does not exist", id=contact_id)
    member = store.is_member(group_type, group_id, contact_id)
    result: dict[str, Any] = {"contact_id": contact_id, "id": group_id, "type": group_type.value, "member": member}
    if not record.rule:
        result.update(matches=None, explanation=None, note="assigned by hand; there is no rule")
        return result
    rule = parse_rule(record.rule)
    explanation = Reference(clock.now()).explain(rule, decode_item(item))
    result.update(matches=explanation["verdict"], explanation=explanation)
    if group_type is GroupType.AUDIENCE:
        result["excluded_because"] = (
            exclusion_reason(item, record.channel or "email") if explanation["verdict"] else None
        )
    return result


def memberships(contact_id: str) -> dict[str, Any]:
    """A contact's customer groups, segments, audiences and badges (with icons)."""
    if _raw_contacts([contact_id]).get(contact_id) is None:
        raise NotFound(f"contact {contact_id} does not exist", id=contact_id)
    found: dict[str, list[str]] = {"groups": [], "segments": [], "audiences": [], "badges": []}
    prefixes = {"cg#": "groups", "seg#": "segments", "aud#": "audiences", "bdg#": "badges"}
    for record in store.memberships_of(contact_id):
        for prefix, name in prefixes.items():
            if record.group_key.startswith(prefix):
                found[name].append(record.group_key.removeprefix(prefix))
    keys = [
        (t.value, i)
        for t, ids in ((GroupType.SEGMENT, found["segments"]), (GroupType.BADGE, found["badges"]))
        for i in ids
    ]
    definitions = {(r.entity_type, r.entity_id): r for r in SegmentRecord.batch_get(keys)} if keys else {}

    def described(group_type: GroupType, group_id: str) -> dict[str, Any]:
        record = definitions.get((group_type.value, group_id))
        entry: dict[str, Any] = {"id": group_id, "name": record.name if record else None}
        if group_type is GroupType.BADGE:
            entry["icon"] = record.icon if record else None
        return entry

    return {
        "contact_id": contact_id,
        "groups": sorted(found["groups"]),
        "segments": [described(GroupType.SEGMENT, i) for i in sorted(found["segments"])],
        "audiences": sorted(found["audiences"]),
        "badges": [described(GroupType.BADGE, i) for i in sorted(found["badges"])],
    }


def recalculate_contact(group_id: str, contact_id: str) -> dict[str, Any]:
    """Online recalculation of one segment for one contact (segments that allow it)."""
    record = _record(GroupType.SEGMENT, group_id)
    if not record.online:
        raise Conflict(f"segment {group_id} does not allow online recalculation; enable online in its settings")
    if not record.rule:
        raise Conflict(f"segment {group_id} has no rule")
    rule = parse_rule(record.rule)
    target = Target(GroupType.SEGMENT, group_id, compile_rule(rule, clock.now()))
    for _ in range(recalculation.CONFLICT_RETRIES):
        item = _raw_contacts([contact_id]).get(contact_id)
        if item is None:
            raise NotFound(f"contact {contact_id} does not exist", id=contact_id)
        change = evaluate(item, [target])
        before = group_id in item.get("segment_ids", {}).get("SS", ())
        if change is None:
            return {"contact_id": contact_id, "segment_id": group_id, "member": before, "changed": False}
        report = commit_units([store.change_unit(0, change, clock.now_iso())])
        if not report.failures:
            return {"contact_id": contact_id, "segment_id": group_id, "member": not before, "changed": True}
    raise Conflict(f"contact {contact_id} keeps changing; retry later")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _record(group_type: GroupType, group_id: str) -> SegmentRecord:
    record = store.get_record(group_type, group_id) if is_valid_id(group_id) else None
    if record is None:
        raise NotFound(f"{group_type.value} {group_id} does not exist", id=group_id)
    return record


def _check_unlocked(record: SegmentRecord) -> None:
    if record.state == State.LOCKED.value:
        raise Conflict(
            f"audience {record.entity_id} is locked: campaign {record.locked_by} was launched at it",
            locked_by=record.locked_by,
        )


def _check_type_rules(
    group_type: GroupType, rule: Any, flexi: bool, online: bool, icon: str | None, creating: bool
) -> None:
    problems = []
    if group_type in (GroupType.SEGMENT, GroupType.AUDIENCE) and rule is None:
        problems.append({"field": "rule", "problem": f"a {group_type.value} needs a rule"})
    if group_type is GroupType.BADGE and flexi and rule is None:
        problems.append({"field": "rule", "problem": "a flexi badge needs a rule"})
    if group_type is GroupType.BADGE and not icon:
        problems.append({"field": "icon", "problem": "a badge needs an icon (shown on the contact's record)"})
    if group_type is GroupType.AUDIENCE and flexi:
        problems.append(
            {"field": "flexi", "problem": "audiences are selected once; only segments and badges are flexi"}
        )
    if group_type is not GroupType.SEGMENT and online:
        problems.append({"field": "online", "problem": "online recalculation applies to segments only"})
    if group_type is not GroupType.BADGE and icon:
        problems.append({"field": "icon", "problem": "only badges have icons"})
    if problems:
        raise ValidationFailed(problems)


def _parsed(source: Any, group_type: GroupType, own_id: str | None) -> Rule:
    """Parse a rule and check what it refers to exists and does not lead back to itself."""
    try:
        rule = parse_rule(source)
    except RuleError as exc:
        raise ValidationFailed(exc.problems) from exc
    refs = [(GroupType.SEGMENT, s) for s in sorted(rule.segments)] + [(GroupType.BADGE, b) for b in sorted(rule.badges)]
    known = (
        {(r.entity_type, r.entity_id): r for r in SegmentRecord.batch_get([(t.value, i) for t, i in refs])}
        if refs
        else {}
    )
    problems = [{"field": "rule", "problem": f"unknown {t.value} {i}"} for t, i in refs if (t.value, i) not in known]
    if problems:
        raise ValidationFailed(problems)
    if own_id is not None and _reaches(refs, (group_type, own_id)):
        raise ValidationFailed.one("rule", f"cycle: this rule refers back to {group_type.value} {own_id}")
    return rule


def _reaches(refs: list[tuple[GroupType, str]], goal: tuple[GroupType, str]) -> bool:
    """True if following rule references from ``refs`` arrives at ``goal``."""
    seen: set[tuple[GroupType, str]] = set()
    frontier = list(refs)
    while frontier:
        current = frontier.pop()
        if current == goal:
            return True
        if current in seen:
            continue
        seen.add(current)
        record = store.get_record(*current)
        if record is not None and record.rule:
            rule = parse_rule(record.rule)
            frontier += [(GroupType.SEGMENT, s) for s in rule.segments] + [(GroupType.BADGE, b) for b in rule.badges]
    return False


def _referencing_rules(group_type: GroupType, group_id: str) -> list[str]:
    """Definitions whose rules refer to this segment or badge."""
    if group_type is GroupType.AUDIENCE:
        return []
    users = []
    for other in (GroupType.SEGMENT, GroupType.AUDIENCE, GroupType.BADGE):
        for record in SegmentRecord.query(other.value):
            if record.rule and (other, record.entity_id) != (group_type, group_id):
                rule = parse_rule(record.rule)
                refs = rule.segments if group_type is GroupType.SEGMENT else rule.badges
                if group_id in refs:
                    users.append(f"{other.value} {record.entity_id}")
    return users


def _raw_contacts(contact_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Raw contact items by id (consistent reads)."""
    connection = ContactRecord._get_connection()
    found = {}
    for contact_id in contact_ids:
        if not is_valid_id(contact_id):
            continue
        item = connection.get_item(contact_id, consistent_read=True).get("Item")
        if item is not None:
            found[contact_id] = item
    return found
