"""Steps of the forced group deletion state machine.

``unassign_members`` removes the group from its members a page at a time,
each contact in its own all-or-nothing change packed into few transactions;
it works until its time budget is spent and says whether members remain, so
the state machine loops without growing its history per contact.
``finish_deletion`` removes the group itself. Both are idempotent: a retried
or repeated step finds less or nothing to do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from herald import clock
from herald.contacts.model import Contact
from herald.groups.model import GroupState
from herald.store import contacts as contact_store
from herald.store import groups as group_store
from herald.store.transactions import commit_units

PAGE_SIZE = 100


@dataclass
class UnassignProgress:
    """How many members a step unassigned, and whether any remain."""

    unassigned: int
    failed: int
    more: bool


def unassign_members(group_id: str, time_budget_s: float = 60.0) -> UnassignProgress:
    """Unassign members of a Deleting group until done or out of time."""
    group = group_store.get(group_id)
    if group is None or group.state is not GroupState.DELETING:
        return UnassignProgress(0, 0, False)
    deadline = time.monotonic() + time_budget_s
    unassigned = failed = 0
    while time.monotonic() < deadline:
        ids = list(contact_store.group_member_ids(group_id, PAGE_SIZE))
        if not ids:
            return UnassignProgress(unassigned, failed, False)
        contacts = contact_store.batch_get(ids)
        now = clock.now_iso()
        units = []
        for position, contact in enumerate(c for c in contacts.values() if group_id in c.group_ids):
            after = contact.model_copy(
                update={"group_ids": [g for g in contact.group_ids if g != group_id], "updated_at": now}
            )
            units.append(contact_store.change_unit(position, contact, after))
        report = commit_units(units)
        unassigned += len(units) - len(report.failures)
        failed += len(report.failures)
        _drop_orphans(group_id, ids, contacts)
        if report.failures and len(report.failures) == len(units):
            break  # every change raced with an edit: let the state machine retry
    return UnassignProgress(unassigned, failed, True)


def _drop_orphans(group_id: str, ids: list[str], contacts: Mapping[str, Contact]) -> None:
    """Remove membership items no contact backs (defensive: keeps the loop making progress)."""
    for contact_id in ids:
        contact = contacts.get(contact_id)
        if contact is None or group_id not in contact.group_ids:
            contact_store.delete_membership(group_id, contact_id)


def finish_deletion(group_id: str) -> str:
    """Delete the group once no members remain.

    Returns ``deleted`` (gone, also when it already was), ``members_remain``
    (a member was assigned before the group was marked; loop again) or
    ``not_deleting`` (the group is not marked for deletion; nothing done).
    """
    group = group_store.get(group_id)
    if group is None:
        return "deleted"
    if group.state is not GroupState.DELETING:
        return "not_deleting"
    if list(contact_store.group_member_ids(group_id, 1)):
        return "members_remain"
    group_store.delete_name_claim(group)
    group_store.delete_record(group_id)
    return "deleted"
