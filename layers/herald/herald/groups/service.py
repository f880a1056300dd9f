"""Customer-group operations: the domain logic behind the groups API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herald import clock
from herald.contacts.model import is_valid_id
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import Conflict, HeraldError, NotFound, StaleVersion
from herald.groups.model import Group, GroupIn, GroupPatch, GroupState
from herald.store import contacts as contact_store
from herald.store import groups as store
from herald.store.transactions import Failure, commit_units

MAX_PAGE = 100
EDIT_RETRIES = 5

# Starts the state machine that unassigns a group's members; returns its id.
DeletionStarter = Callable[[str, str], str]


def create_group(data: GroupIn) -> Group:
    """Create a group; raises ``Conflict`` if the id or the name is taken."""
    now = clock.now_iso()
    group = Group(
        group_id=data.group_id or uuid.uuid4().hex,
        name=data.name,
        description=data.description,
        created_at=now,
        updated_at=now,
        version=0,
    )
    _commit(store.create_unit(group), group)
    return group.model_copy(update={"version": 1})


def get_group(group_id: str) -> Group:
    """One group; raises ``NotFound``."""
    group = store.get(group_id) if is_valid_id(group_id) else None
    if group is None:
        raise NotFound(f"group {group_id} does not exist", id=group_id)
    return group


@dataclass
class GroupPage:
    """A page of groups and the cursor of the next one."""

    items: list[Group]
    next_cursor: str | None


def list_groups(cursor: str | None = None, limit: int = 50) -> GroupPage:
    """Groups in id order (one catalog partition: a Query, never a scan)."""
    limit = max(1, min(limit, MAX_PAGE))
    records, state = contact_store.query_pages([store.page], decode_cursor(cursor, "groups"), limit)
    return GroupPage([store.from_record(r) for r in records], encode_cursor(state, "groups"))


def update_group(group_id: str, patch: GroupPatch, if_match: int | None = None) -> Group:
    """Rename a group or change its description (409 on a stale ``If-Match``)."""
    for _ in range(EDIT_RETRIES):
        current = get_group(group_id)
        if if_match is not None and if_match != current.version:
            raise StaleVersion("group", group_id, current.version)
        changes: dict[str, Any] = {k: getattr(patch, k) for k in patch.model_fields_set}
        if changes.get("name") is None:
            changes.pop("name", None)
        updated = current.model_copy(update={**changes, "updated_at": clock.now_iso()})
        try:
            _commit(store.update_unit(current, updated), updated)
            latest = get_group(group_id)  # counters may have moved meanwhile
            return latest
        except StaleVersion:
            if if_match is not None:
                raise
    raise Conflict(f"group {group_id} keeps changing; retry later", id=group_id)


@dataclass
class DeletionResult:
    """``deleted`` at once, or ``deleting`` while members are being unassigned."""

    state: str
    group_id: str
    execution: str | None = None
    detached: list[str] | None = None


def delete_group(
    group_id: str, force: bool, start_deletion: DeletionStarter, reason: str | None = None
) -> DeletionResult:
    """Delete a group.

    Unforced, the delete is refused with 409 while customers are assigned or
    campaigns use the group. Forced, the group is marked Deleting at once
    (no new assignments), the things that used it are detached, and a state
    machine unassigns the members page by page, then deletes the group.
    """
    for _ in range(EDIT_RETRIES):
        group = get_group(group_id)
        if group.state is GroupState.DELETING:
            if not force:
                raise Conflict(
                    f"group {group_id} is being deleted; DELETE with force=true restarts the deletion",
                    id=group_id,
                    state=group.state.value,
                )
            break
        in_use = group.member_count > 0 or group.ref_count > 0
        if in_use and force:
            break
        if in_use:
            raise _in_use(group)
        if not commit_units([store.delete_unit(group)]).failures:
            return DeletionResult("deleted", group_id)
        # Lost a race (a member joined, a rename moved the name claim): look again.
    else:
        raise Conflict(f"group {group_id} keeps changing; retry later", id=group_id)
    marked = store.set_state(group_id, GroupState.DELETING, [GroupState.READY, GroupState.DELETING])
    if marked is None:
        raise NotFound(f"group {group_id} does not exist", id=group_id)
    detached = store.drop_references(group_id)
    execution = start_deletion(group_id, reason or "forced delete")
    return DeletionResult("deleting", group_id, execution, detached)


def _in_use(group: Group) -> Conflict:
    return Conflict(
        f"group {group.group_id} is in use: {group.member_count} customers, {group.ref_count} campaigns; "
        "unassign them or delete with force=true",
        id=group.group_id,
        member_count=group.member_count,
        used_by=store.referrers(group.group_id),
    )


def add_reference(group_id: str, referrer: str) -> None:
    """Record that ``referrer`` (e.g. ``campaign#<id>``) uses a group."""
    report = commit_units([store.reference_unit(group_id, referrer, add=True)])
    if report.failures:
        raise NotFound(f"group {group_id} does not exist or is being deleted", id=group_id)


def remove_reference(group_id: str, referrer: str) -> None:
    """Forget that ``referrer`` uses a group (no-op if it did not)."""
    commit_units([store.reference_unit(group_id, referrer, add=False)])


def _commit(unit: Any, group: Group) -> None:
    failure = commit_units([unit]).failures.get(0)
    if failure is not None:
        raise _failure_error(failure, group)


def _failure_error(failure: Failure, group: Group) -> HeraldError:
    if store.NAME_LABEL in failure.labels:
        owner = store.name_owner(group.name)
        return Conflict(f"a group named {group.name!r} already exists", field="name", existing_group_id=owner)
    if store.GROUP_LABEL in failure.labels:
        if group.version == 0:
            return Conflict(f"group {group.group_id} already exists", id=group.group_id)
        latest = store.get(group.group_id)
        if latest is None:
            return NotFound(f"group {group.group_id} does not exist", id=group.group_id)
        if latest.state is GroupState.DELETING:
            return Conflict(f"group {group.group_id} is being deleted", id=group.group_id, state=latest.state.value)
        return StaleVersion("group", group.group_id, latest.version)
    return Conflict(failure.message)
