"""Contacts persistence: records ↔ domain models, change units, queries.

A contact's item, its unique email key and its customer-group memberships
always change in one transaction (see :mod:`herald.store.transactions`), so
the membership index that group targeting reads never disagrees with the
contact.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

from pynamodb.exceptions import QueryError
from pynamodb.pagination import ResultIterator

from herald.contacts.model import Bounce, Consent, Contact, ContactKind, ContactStatus, email_key
from herald.errors import BadRequest
from herald.store.tables import (
    KIND_STATUS_SHARDS,
    ContactKeyRecord,
    ContactRecord,
    GroupCounterRecord,
    MembershipRecord,
)
from herald.store.transactions import CounterDelta, Operation, Unit

GROUP_PREFIX = "cg#"
GROUP_ENTITY = "group"
GROUP_READY = "Ready"

# Labels of the operations in a contact change; they name what failed.
CONTACT_LABEL = "contact"
KEY_LABEL_PREFIX = "key:"
GROUP_LABEL_PREFIX = "group:"


def shard_of(contact_id: str) -> int:
    """The stable index shard of a contact (spreads one kind/status over partitions)."""
    return zlib.crc32(contact_id.encode()) % KIND_STATUS_SHARDS


def kind_status_partition(kind: str, status: str, shard: int) -> str:
    """The ``KindStatusIndex`` partition key."""
    return f"{kind}#{status}#{shard:02d}"


def group_key(group_id: str) -> str:
    """The memberships-table partition of a customer group."""
    return GROUP_PREFIX + group_id


# --------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------


def to_record(contact: Contact, stored_version: int | None) -> ContactRecord:
    """Build the record to write; ``stored_version`` drives the version condition."""
    record = ContactRecord(
        contact_id=contact.contact_id,
        kind=contact.kind.value,
        status=contact.status.value,
        email=contact.email,
        phone=contact.phone,
        first_name=contact.first_name,
        last_name=contact.last_name,
        group_ids=set(contact.group_ids) or None,
        attributes=contact.attributes or None,
        consent={channel: c.model_dump() for channel, c in contact.consent.items()} or None,
        bounce=contact.bounce.model_dump(),
        time_zone=contact.time_zone,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
        kind_status_shard=kind_status_partition(contact.kind.value, contact.status.value, shard_of(contact.contact_id)),
        birthday_md=_month_day(contact.attributes.get("birthday")),
        signup_md=_month_day(contact.attributes.get("signup_date") or contact.created_at[:10]),
        segment_ids=set(contact.segment_ids) or None,
        badge_ids=set(contact.badge_ids) or None,
        activity=contact.activity or None,
        campaigns_received=set(contact.campaigns_received) or None,
        campaigns_opened=set(contact.campaigns_opened) or None,
        campaigns_clicked=set(contact.campaigns_clicked) or None,
    )
    if stored_version is not None:
        record.version = stored_version
    return record


def from_record(record: ContactRecord) -> Contact:
    """The domain contact of a stored record."""
    consent_raw = record.consent or {}
    bounce_raw = record.bounce or {}
    return Contact(
        contact_id=record.contact_id,
        kind=ContactKind(record.kind),
        status=ContactStatus(record.status),
        email=record.email,
        phone=record.phone,
        first_name=record.first_name,
        last_name=record.last_name,
        group_ids=sorted(record.group_ids or ()),
        attributes=record.attributes or {},
        consent={channel: Consent(**value) for channel, value in consent_raw.items()},
        bounce=Bounce(**bounce_raw),
        time_zone=record.time_zone,
        created_at=record.created_at,
        updated_at=record.updated_at,
        version=int(record.version or 0),
        segment_ids=sorted(record.segment_ids or ()),
        badge_ids=sorted(record.badge_ids or ()),
        activity=record.activity or {},
        campaigns_received=sorted(record.campaigns_received or ()),
        campaigns_opened=sorted(record.campaigns_opened or ()),
        campaigns_clicked=sorted(record.campaigns_clicked or ()),
    )


def _month_day(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10]).strftime("%m-%d")
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Change units
# --------------------------------------------------------------------------


def change_unit(tag: Any, before: Contact | None, after: Contact | None) -> Unit:
    """The all-or-nothing write that turns ``before`` into ``after``.

    ``before`` None creates (the id must be free); ``after`` None deletes.
    Every write is conditional on the version that was read, so a concurrent
    change makes this unit fail instead of being overwritten.
    """
    operations: list[Operation] = []
    if after is None:
        assert before is not None
        record = to_record(before, before.version)
        operations.append(Operation("delete", record, CONTACT_LABEL))
    else:
        operations.append(Operation("put", to_record(after, before.version if before else None), CONTACT_LABEL))

    operations += _key_operations(before, after)
    membership_ops, counters = _membership_operations(before, after)
    return Unit(tag=tag, operations=operations + membership_ops, counters=counters)


def _key_operations(before: Contact | None, after: Contact | None) -> list[Operation]:
    old = before.natural_keys() if before else set()
    new = after.natural_keys() if after else set()
    contact_id = (after or before).contact_id  # type: ignore[union-attr]
    ops: list[Operation] = []
    for key in sorted(old - new):
        ops.append(
            Operation(
                "delete",
                ContactKeyRecord(key=key, contact_id=contact_id),
                KEY_LABEL_PREFIX + key,
                condition=ContactKeyRecord.contact_id == contact_id,
            )
        )
    for key in sorted(new - old):
        # A new contact's key must be free; an existing contact may also re-claim its own.
        condition = ContactKeyRecord.key.does_not_exist()
        if before is not None:
            condition = condition | (ContactKeyRecord.contact_id == contact_id)
        ops.append(
            Operation("put", ContactKeyRecord(key=key, contact_id=contact_id), KEY_LABEL_PREFIX + key, condition)
        )
    return ops


def _membership_operations(before: Contact | None, after: Contact | None) -> tuple[list[Operation], list[CounterDelta]]:
    old_groups = set(before.group_ids) if before else set()
    new_groups = set(after.group_ids) if after else set()
    contact_id = (after or before).contact_id  # type: ignore[union-attr]
    ops: list[Operation] = []
    counters: list[CounterDelta] = []
    for group_id in sorted(old_groups - new_groups):
        ops.append(
            Operation("delete", MembershipRecord(group_key=group_key(group_id), contact_id=contact_id), "membership")
        )
        counters.append(CounterDelta(GROUP_LABEL_PREFIX + group_id, _group_counter(group_id), -1))
    # A member whose status or kind changed is rewritten so the status index follows.
    status_changed = (
        before is not None and after is not None and (before.status, before.kind) != (after.status, after.kind)
    )
    rewrite = new_groups - old_groups if not status_changed else new_groups
    for group_id in sorted(rewrite):
        assert after is not None
        ops.append(Operation("put", membership_record(group_id, after), "membership"))
    for group_id in sorted(new_groups - old_groups):
        counters.append(CounterDelta(GROUP_LABEL_PREFIX + group_id, _group_counter(group_id), +1))
    return ops, counters


def membership_record(group_id: str, contact: Contact) -> MembershipRecord:
    """The membership item of a customer in a group."""
    return MembershipRecord(
        group_key=group_key(group_id),
        contact_id=contact.contact_id,
        kind=contact.kind.value,
        status=contact.status.value,
        group_status=f"{group_id}#{contact.status.value}",
        added_at=contact.updated_at,
    )


def _group_counter(group_id: str) -> Callable[[int, bool], Operation]:
    def build(delta: int, gains_members: bool) -> Operation:
        record = GroupCounterRecord(entity_type=GROUP_ENTITY, entity_id=group_id)
        # Gaining members needs a Ready group; losing them needs the group to exist,
        # so an update can never create a phantom group item.
        condition = GroupCounterRecord.state == GROUP_READY if gains_members else GroupCounterRecord.entity_id.exists()
        return Operation(
            "update",
            record,
            GROUP_LABEL_PREFIX + group_id,
            condition=condition,
            actions=[GroupCounterRecord.member_count.add(delta)],
            versioned=False,
        )

    return build


# --------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------


def get(contact_id: str) -> Contact | None:
    """One contact by id (strongly consistent), or None."""
    try:
        return from_record(ContactRecord.get(contact_id, consistent_read=True))
    except ContactRecord.DoesNotExist:
        return None


def batch_get(contact_ids: Iterable[str]) -> dict[str, Contact]:
    """Contacts by id (BatchGetItem, 100 keys a request); missing ids are absent."""
    unique = list(dict.fromkeys(contact_ids))
    if not unique:
        return {}
    return {r.contact_id: from_record(r) for r in ContactRecord.batch_get(unique, consistent_read=True)}


def resolve_email_keys(keys: Iterable[str]) -> dict[str, str]:
    """Map unique email keys to the contact ids that own them."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    return {r.key: r.contact_id for r in ContactKeyRecord.batch_get(unique, consistent_read=True)}


def owner_of_email(kind: str, email: str) -> str | None:
    """The contact id that owns an email within a kind, if any."""
    return resolve_email_keys([email_key(kind, email)]).get(email_key(kind, email))


QueryFn = Callable[[dict[str, Any] | None, int], ResultIterator[Any]]


def query_pages(
    partitions: list[QueryFn], state: dict[str, Any] | None, limit: int
) -> tuple[list[Any], dict[str, Any] | None]:
    """Read up to ``limit`` items across partitions in order, resumably.

    ``state`` is ``{"p": partition index, "k": last evaluated key}`` as
    returned by the previous call; the returned state is None at the end.
    """
    position = (state or {}).get("p", 0)
    last_key = (state or {}).get("k")
    valid_key = last_key is None or (isinstance(last_key, dict) and all(isinstance(v, dict) for v in last_key.values()))
    if (
        not isinstance(position, int)
        or isinstance(position, bool)
        or not 0 <= position < len(partitions)
        or not valid_key
    ):
        raise BadRequest("cursor is not a valid pagination cursor", field="cursor")
    items: list[Any] = []
    while position < len(partitions) and len(items) < limit:
        iterator = partitions[position](last_key, limit - len(items))
        try:
            items.extend(iterator)
        except QueryError as exc:
            if exc.cause_response_code == "ValidationException" and last_key is not None:
                raise BadRequest("cursor is not a valid pagination cursor", field="cursor") from exc
            raise
        last_key = iterator.last_evaluated_key
        if last_key is None:
            position += 1
    if position >= len(partitions):
        return items, None
    return items, {"p": position, "k": last_key}


def kind_status_partitions(kinds: list[str], statuses: list[str]) -> list[QueryFn]:
    """Query functions over every shard of the given kinds and statuses."""

    def partition(key: str) -> QueryFn:
        def run(last_key: dict[str, Any] | None, limit: int) -> ResultIterator[Any]:
            return ContactRecord.kind_status_index.query(key, limit=limit, last_evaluated_key=last_key)

        return run

    return [
        partition(kind_status_partition(kind, status, shard))
        for kind in kinds
        for status in statuses
        for shard in range(KIND_STATUS_SHARDS)
    ]


def group_member_partition(group_id: str, status: str | None) -> QueryFn:
    """A query function over a group's members, optionally of one status."""

    def run(last_key: dict[str, Any] | None, limit: int) -> ResultIterator[Any]:
        if status is None:
            return MembershipRecord.query(
                group_key(group_id), limit=limit, last_evaluated_key=last_key, consistent_read=True
            )
        return MembershipRecord.group_status_index.query(
            f"{group_id}#{status}", limit=limit, last_evaluated_key=last_key
        )

    return run


def group_member_ids(group_id: str, limit: int) -> Iterator[str]:
    """Contact ids of a group's members, up to ``limit`` (strongly consistent)."""
    for record in MembershipRecord.query(group_key(group_id), limit=limit, consistent_read=True):
        yield record.contact_id


def delete_membership(group_id: str, contact_id: str) -> None:
    """Delete one membership item (cleanup of an orphan)."""
    MembershipRecord(group_key=group_key(group_id), contact_id=contact_id).delete()
