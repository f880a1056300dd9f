"""Segments, audiences and badges persistence: definitions, membership changes, runs.

A segment or badge membership lives in two places that always change in one
transaction: the contact item's ``segment_ids``/``badge_ids`` set (what rules
and the nightly diff read, with the contact's version as the condition) and
the membership item ``seg#<id>``/``bdg#<id>`` (what member listings and
campaign targeting query). Audience memberships live only in the memberships
table. Member counts are counters on the definition, changed in the same
transaction, so they are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynamodb.expressions.update import Action

from herald.segments.model import Definition, GroupType, State
from herald.store.tables import (
    AuditRecord,
    ContactRecord,
    GroupCounterRecord,
    MembershipRecord,
    SegmentRecord,
)
from herald.store.transactions import CounterDelta, Operation, Unit

CONTACT_LABEL = "contact"
FORM_PREFIX = "form#"
FLEXI = "flexi"


def membership_key(group_type: GroupType, group_id: str) -> str:
    """The memberships-table partition of a segment, audience or badge."""
    return group_type.prefix + group_id


def to_definition(record: SegmentRecord, warnings: list[str] | None = None) -> Definition:
    return Definition(
        id=record.entity_id,
        type=GroupType(record.entity_type),
        name=record.name,
        description=record.description,
        rule=record.rule,
        flexi=bool(record.flexi),
        online=bool(record.online),
        icon=record.icon,
        channel=record.channel,
        state=State(record.state),
        member_count=int(record.member_count or 0),
        excluded={k: int(v) for k, v in (record.excluded or {}).items()} or None,
        locked_by=record.locked_by,
        duplicated_from=record.duplicated_from,
        created_at=record.created_at,
        updated_at=record.updated_at,
        version=int(record.version or 0),
        warnings=warnings or [],
    )


def get_record(group_type: GroupType, group_id: str) -> SegmentRecord | None:
    try:
        return SegmentRecord.get(group_type.value, group_id, consistent_read=True)
    except SegmentRecord.DoesNotExist:
        return None


def flexi_records() -> list[SegmentRecord]:
    """Every flexi segment and badge (``live_type = flexi`` on the sparse ``LiveIndex``)."""
    return list(SegmentRecord.live_index.query(FLEXI))


# --------------------------------------------------------------------------
# Membership changes
# --------------------------------------------------------------------------


@dataclass
class MembershipChange:
    """What one contact's memberships become: new sets, and each entry and exit."""

    contact_id: str
    version: int | None
    kind: str
    status: str
    segment_ids: set[str] | None = None  # None: unchanged
    badge_ids: set[str] | None = None
    entered: list[tuple[GroupType, str]] = field(default_factory=list)
    exited: list[tuple[GroupType, str]] = field(default_factory=list)
    source: str = "rule"
    actor: str | None = None
    audit: list[AuditRecord] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.entered) + len(self.exited)


def membership_label(group_type: GroupType, group_id: str) -> str:
    return f"{group_type.value}:{group_id}"


def counter_label(group_type: GroupType, group_id: str) -> str:
    return f"counter:{group_type.value}:{group_id}"


def is_membership_label(label: str) -> bool:
    """True for the label of a segment, badge or audience membership or counter operation."""
    kind = label.removeprefix("counter:").split(":", 1)[0]
    return kind in {t.value for t in GroupType}


def change_unit(tag: Any, change: MembershipChange, now: str) -> Unit:
    """The all-or-nothing write of one contact's membership change.

    Segment and badge changes update the contact's sets conditionally on the
    version that was evaluated; audience entries are conditional puts, so a
    retried fill never counts a member twice.
    """
    operations: list[Operation] = []
    actions: list[Action] = []
    if change.segment_ids is not None:
        actions.append(
            ContactRecord.segment_ids.set(change.segment_ids)
            if change.segment_ids
            else ContactRecord.segment_ids.remove()
        )
    if change.badge_ids is not None:
        actions.append(
            ContactRecord.badge_ids.set(change.badge_ids) if change.badge_ids else ContactRecord.badge_ids.remove()
        )
    if actions:
        contact = ContactRecord(contact_id=change.contact_id)
        contact.version = change.version
        operations.append(Operation("update", contact, CONTACT_LABEL, actions=actions))
    counters: list[CounterDelta] = []
    for group_type, group_id in change.entered:
        record = MembershipRecord(
            group_key=membership_key(group_type, group_id),
            contact_id=change.contact_id,
            kind=change.kind,
            status=change.status,
            added_at=now,
            source=change.source,
            actor=change.actor,
        )
        # Audience entries (never on the contact item) are guarded by the membership itself.
        guarded = group_type is GroupType.AUDIENCE or not actions
        condition = MembershipRecord.contact_id.does_not_exist() if guarded else None
        operations.append(Operation("put", record, membership_label(group_type, group_id), condition=condition))
        counters.append(CounterDelta(counter_label(group_type, group_id), _counter(group_type, group_id), +1))
    for group_type, group_id in change.exited:
        record = MembershipRecord(group_key=membership_key(group_type, group_id), contact_id=change.contact_id)
        guarded = group_type is GroupType.AUDIENCE or not actions
        exists = MembershipRecord.contact_id.exists() if guarded else None
        operations.append(Operation("delete", record, membership_label(group_type, group_id), condition=exists))
        counters.append(CounterDelta(counter_label(group_type, group_id), _counter(group_type, group_id), -1))
    for audit in change.audit:
        operations.append(Operation("put", audit, "audit", versioned=False))
    return Unit(tag=tag, operations=operations, counters=counters)


def departure(
    contact_id: str, segment_ids: list[str], badge_ids: list[str]
) -> tuple[list[Operation], list[CounterDelta]]:
    """Removing a deleted contact from every segment, badge, audience and form capture (with counters)."""
    leaving = [(GroupType.SEGMENT, s) for s in segment_ids] + [(GroupType.BADGE, b) for b in badge_ids]
    held = [m.group_key for m in memberships_of(contact_id)]
    leaving += [
        (GroupType.AUDIENCE, key.removeprefix(GroupType.AUDIENCE.prefix))
        for key in held
        if key.startswith(GroupType.AUDIENCE.prefix)
    ]
    # Each delete is conditional on the membership existing (the audience index may lag), so a
    # counter is only ever decremented for a real member; definitions deleted meanwhile get none.
    existing = {(r.entity_type, r.entity_id) for r in SegmentRecord.batch_get([(t.value, i) for t, i in leaving])}
    operations = [
        Operation(
            "delete",
            MembershipRecord(group_key=membership_key(t, i), contact_id=contact_id),
            membership_label(t, i),
            condition=MembershipRecord.contact_id.exists(),
        )
        for t, i in leaving
    ]
    # Lead-form captures (``form#<id>``) go too, so form targeting never finds a deleted lead.
    operations += [
        Operation("delete", MembershipRecord(group_key=key, contact_id=contact_id), key, versioned=False)
        for key in held
        if key.startswith(FORM_PREFIX)
    ]
    counters = [
        # A deleted contact leaves even a locked audience (erasure must always be possible).
        CounterDelta(counter_label(t, i), _counter(t, i, honour_lock=False), -1)
        for t, i in leaving
        if (t.value, i) in existing
    ]
    return operations, counters


def _counter(group_type: GroupType, group_id: str, honour_lock: bool = True) -> Callable[[int, bool], Operation]:
    def build(delta: int, gains_members: bool) -> Operation:
        record = GroupCounterRecord(entity_type=group_type.value, entity_id=group_id)
        condition = GroupCounterRecord.entity_id.exists()
        if group_type is GroupType.AUDIENCE and honour_lock:
            # A launched campaign's audience is completely locked, even against a change in flight.
            condition = condition & (GroupCounterRecord.state != State.LOCKED.value)
        return Operation(
            "update",
            record,
            counter_label(group_type, group_id),
            condition=condition,
            actions=[GroupCounterRecord.member_count.add(delta)],
            versioned=False,
        )

    return build


def members(
    group_type: GroupType, group_id: str, start: dict[str, Any] | None, limit: int
) -> tuple[list[MembershipRecord], dict[str, Any] | None]:
    """A page of members and the key to continue from."""
    result = MembershipRecord.query(
        membership_key(group_type, group_id), limit=limit, last_evaluated_key=start, consistent_read=True
    )
    items = list(result)
    return items, result.last_evaluated_key


def is_member(group_type: GroupType, group_id: str, contact_id: str) -> bool:
    try:
        MembershipRecord.get(membership_key(group_type, group_id), contact_id, consistent_read=True)
        return True
    except MembershipRecord.DoesNotExist:
        return False


def memberships_of(contact_id: str) -> list[MembershipRecord]:
    """Every group-like membership of a contact (customer groups, segments, audiences, badges)."""
    return list(MembershipRecord.contact_groups_index.query(contact_id))
