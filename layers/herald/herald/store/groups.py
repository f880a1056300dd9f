"""Customer-group persistence in the catalog table.

A group is ``(group, <id>)``; its unique name is held by ``(group-name,
<lowercased name>)``; things that use it (campaigns, later) hold
``(ref#group#<id>, <referrer>)`` items and bump the group's ``ref_count``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pynamodb.exceptions import DeleteError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.pagination import ResultIterator

from herald.groups.model import Group, GroupState
from herald.store.contacts import GROUP_ENTITY, GROUP_LABEL_PREFIX
from herald.store.tables import CatalogRecord, GroupCounterRecord
from herald.store.transactions import Operation, Unit

NAME_ENTITY = "group-name"
GROUP_LABEL = "group"
NAME_LABEL = "group-name"
REF_LABEL = "ref"


def ref_partition(group_id: str) -> str:
    """Catalog partition of the things that use a group."""
    return f"ref#group#{group_id}"


def name_key(name: str) -> str:
    """Group names are unique regardless of case and surrounding spaces."""
    return " ".join(name.split()).casefold()


def to_record(group: Group, stored_version: int | None) -> CatalogRecord:
    record = CatalogRecord(
        entity_type=GROUP_ENTITY,
        entity_id=group.group_id,
        name=group.name,
        description=group.description,
        state=group.state.value,
        member_count=group.member_count,
        ref_count=group.ref_count,
        created_at=group.created_at,
        updated_at=group.updated_at,
    )
    if stored_version is not None:
        record.version = stored_version
    return record


def from_record(record: CatalogRecord) -> Group:
    return Group(
        group_id=record.entity_id,
        name=record.name or "",
        description=record.description,
        state=GroupState(record.state or GroupState.READY.value),
        member_count=int(record.member_count or 0),
        ref_count=int(record.ref_count or 0),
        created_at=record.created_at or "",
        updated_at=record.updated_at or "",
        version=int(record.version or 0),
    )


def get(group_id: str) -> Group | None:
    """One group (strongly consistent), or None."""
    try:
        return from_record(CatalogRecord.get(GROUP_ENTITY, group_id, consistent_read=True))
    except CatalogRecord.DoesNotExist:
        return None


def batch_get(group_ids: list[str]) -> dict[str, Group]:
    """Groups by id; unknown ids are absent."""
    unique = list(dict.fromkeys(group_ids))
    if not unique:
        return {}
    keys = [(GROUP_ENTITY, group_id) for group_id in unique]
    return {r.entity_id: from_record(r) for r in CatalogRecord.batch_get(keys, consistent_read=True)}


def page(last_key: dict[str, Any] | None, limit: int) -> ResultIterator[CatalogRecord]:
    """A page of groups, ordered by id."""
    return CatalogRecord.query(GROUP_ENTITY, limit=limit, last_evaluated_key=last_key)


def name_owner(name: str) -> str | None:
    """The id of the group holding a name, if any."""
    try:
        return CatalogRecord.get(NAME_ENTITY, name_key(name), consistent_read=True).target_id
    except CatalogRecord.DoesNotExist:
        return None


def referrers(group_id: str, limit: int = 20) -> list[str]:
    """Ids of the things (``campaign#<id>``, ...) that use a group."""
    return [r.entity_id for r in CatalogRecord.query(ref_partition(group_id), limit=limit, consistent_read=True)]


def _name_record(name: str, group_id: str) -> CatalogRecord:
    record = CatalogRecord(entity_type=NAME_ENTITY, entity_id=name_key(name), target_id=group_id)
    return record


def create_unit(group: Group) -> Unit:
    """Create a group and claim its name."""
    name = _name_record(group.name, group.group_id)
    return Unit(
        tag=group.group_id,
        operations=[
            Operation("put", to_record(group, None), GROUP_LABEL),
            Operation("put", name, NAME_LABEL, condition=CatalogRecord.entity_id.does_not_exist(), versioned=False),
        ],
    )


def update_unit(before: Group, after: Group) -> Unit:
    """Save a rename or a new description; moves the name claim when renamed.

    Only the edited fields are written (conditional on the version read and on
    the group being Ready), so member counts, reference counts and the
    deletion state, which change without a new version, are never overwritten.
    """
    record = to_record(before, before.version)
    actions: list[Action] = [CatalogRecord.name.set(after.name), CatalogRecord.updated_at.set(after.updated_at)]
    actions.append(
        CatalogRecord.description.set(after.description)
        if after.description is not None
        else CatalogRecord.description.remove()
    )
    ready = CatalogRecord.state == GroupState.READY.value
    operations = [Operation("update", record, GROUP_LABEL, condition=ready, actions=actions)]
    if name_key(before.name) != name_key(after.name):
        old = _name_record(before.name, before.group_id)
        operations.append(
            Operation("delete", old, NAME_LABEL, condition=CatalogRecord.target_id == before.group_id, versioned=False)
        )
        operations.append(
            Operation(
                "put",
                _name_record(after.name, after.group_id),
                NAME_LABEL,
                condition=CatalogRecord.entity_id.does_not_exist(),
                versioned=False,
            )
        )
    return Unit(tag=after.group_id, operations=operations)


def delete_unit(group: Group) -> Unit:
    """Delete an unused Ready group and free its name.

    The delete is conditional on no members and no referrers at that instant,
    so an assignment racing with the delete either lands first (and the delete
    fails) or fails itself. It does not depend on the version: a concurrent
    rename does not make the group less deletable.
    """
    unused = (
        (CatalogRecord.member_count.does_not_exist() | (CatalogRecord.member_count == 0))
        & (CatalogRecord.ref_count.does_not_exist() | (CatalogRecord.ref_count == 0))
        & (CatalogRecord.state == GroupState.READY.value)
    )
    return Unit(
        tag=group.group_id,
        operations=[
            Operation("delete", to_record(group, group.version), GROUP_LABEL, condition=unused, versioned=False),
            Operation(
                "delete",
                _name_record(group.name, group.group_id),
                NAME_LABEL,
                condition=CatalogRecord.target_id == group.group_id,
                versioned=False,
            ),
        ],
    )


def reference_unit(group_id: str, referrer: str, add: bool) -> Unit:
    """Record (or drop) that ``referrer`` uses a group; keeps ``ref_count`` exact.

    Adding needs a Ready group and a new reference; dropping needs the reference.
    """
    ref = CatalogRecord(entity_type=ref_partition(group_id), entity_id=referrer)
    counter = GroupCounterRecord(entity_type=GROUP_ENTITY, entity_id=group_id)
    counter_condition: Condition
    if add:
        ref_op = Operation("put", ref, REF_LABEL, condition=CatalogRecord.entity_id.does_not_exist(), versioned=False)
        counter_condition = GroupCounterRecord.state == GroupState.READY.value
    else:
        ref_op = Operation("delete", ref, REF_LABEL, condition=CatalogRecord.entity_id.exists(), versioned=False)
        counter_condition = GroupCounterRecord.entity_id.exists()
    counter_op = Operation(
        "update",
        counter,
        GROUP_LABEL_PREFIX + group_id,
        condition=counter_condition,
        actions=[GroupCounterRecord.ref_count.add(1 if add else -1)],
        versioned=False,
    )
    return Unit(tag=referrer, operations=[ref_op, counter_op])


def drop_references(group_id: str) -> list[str]:
    """Delete every ref item of a group being force-deleted; returns the referrers."""
    dropped: list[str] = []
    for record in CatalogRecord.query(ref_partition(group_id), consistent_read=True):
        dropped.append(record.entity_id)
        record.delete(add_version_condition=False)
    return dropped


def delete_name_claim(group: Group) -> None:
    """Free a group's name (idempotent)."""
    record = _name_record(group.name, group.group_id)
    # Already freed, or claimed again by another group: nothing to do.
    with contextlib.suppress(DeleteError):
        record.delete(condition=CatalogRecord.target_id == group.group_id, add_version_condition=False)


def delete_record(group_id: str) -> None:
    """Delete the group item unconditionally (the end of a forced deletion)."""
    CatalogRecord(entity_type=GROUP_ENTITY, entity_id=group_id).delete(add_version_condition=False)


def set_state(group_id: str, state: GroupState, expected: list[GroupState]) -> Group | None:
    """Move a group to ``state`` if it is in one of ``expected``; returns it, or None."""
    counter = GroupCounterRecord(entity_type=GROUP_ENTITY, entity_id=group_id)
    condition = GroupCounterRecord.state.is_in(*[s.value for s in expected])
    try:
        counter.update(actions=[GroupCounterRecord.state.set(state.value)], condition=condition)
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return None
        raise
    return get(group_id)
