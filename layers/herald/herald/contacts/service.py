"""Contact operations: the domain logic behind the contacts API.

Single-contact operations either fully happen or not at all (one
transaction). Bulk operations validate every row, read what exists in
batches, pack the writes into few transactions, and report one outcome per
row. Edits never lose an update: every write is conditional on the version
read, and an edit without ``If-Match`` is re-applied to the newest version.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from herald import clock
from herald.contacts.model import (
    Bounce,
    Consent,
    Contact,
    ContactIn,
    ContactKind,
    ContactPatch,
    ContactStatus,
    email_key,
    is_valid_id,
    validate_attribute_patch,
)
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import Conflict, HeraldError, NotFound, PayloadTooLarge, StaleVersion, ValidationFailed
from herald.groups.model import GroupState
from herald.store import contacts as store
from herald.store import groups as group_store
from herald.store import segments as segment_store
from herald.store.transactions import INVALID_PREFIX, TOO_LARGE, CommitReport, Failure, commit_units

MAX_IMPORT_ROWS = 1000
MAX_PAGE = 100
EDIT_RETRIES = 5


# --------------------------------------------------------------------------
# Single contacts
# --------------------------------------------------------------------------


def create_contact(data: ContactIn) -> Contact:
    """Create one contact.

    Raises:
        ValidationFailed: a lead with groups, or an unknown or deleting group.
        Conflict: the id exists, or another contact of this kind has the email.
    """
    contact = _new_contact(data, clock.now_iso())
    _check_groups(contact.kind, contact.group_ids)
    _commit_one(None, contact)
    return contact.model_copy(update={"version": 1})


def get_contact(contact_id: str) -> Contact:
    """One contact; raises ``NotFound``."""
    contact = store.get(contact_id) if is_valid_id(contact_id) else None
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist", id=contact_id)
    return contact


def update_contact(contact_id: str, patch: ContactPatch, if_match: int | None = None) -> Contact:
    """Apply a partial update.

    With ``if_match`` the update applies only to that version (else 409 with
    the current version); without it, the patch is re-applied to the newest
    version until it lands, so concurrent edits never overwrite each other.
    """
    fields = patch.model_fields_set
    if patch.attributes is not None:
        _validated(lambda: validate_attribute_patch(patch.attributes or {}), "attributes")
    return _edit(contact_id, if_match, lambda current: _apply_patch(current, patch, fields))


def delete_contact(contact_id: str, if_match: int | None = None) -> None:
    """Delete a contact, its email key and its group memberships."""
    _write(contact_id, if_match, lambda current: None)


def assign_group(contact_id: str, group_id: str, if_match: int | None = None) -> Contact:
    """Put a customer in a group (no-op if already a member)."""
    return _edit(
        contact_id,
        if_match,
        lambda c: c.model_copy(update={"group_ids": sorted({*c.group_ids, group_id})}),
    )


def unassign_group(contact_id: str, group_id: str, if_match: int | None = None) -> Contact:
    """Take a customer out of a group; raises ``NotFound`` if not a member."""

    def change(current: Contact) -> Contact:
        if group_id not in current.group_ids:
            raise NotFound(f"contact {contact_id} is not in group {group_id}", id=contact_id, group_id=group_id)
        return current.model_copy(update={"group_ids": [g for g in current.group_ids if g != group_id]})

    return _edit(contact_id, if_match, change)


def _edit(contact_id: str, if_match: int | None, change: Callable[[Contact], Contact]) -> Contact:
    edited = _write(contact_id, if_match, change)
    assert edited is not None
    return edited


def _write(contact_id: str, if_match: int | None, change: Callable[[Contact], Contact | None]) -> Contact | None:
    """Read, change (None deletes), write conditionally; re-apply on a lost race unless ``if_match``."""
    for _ in range(EDIT_RETRIES):
        current = get_contact(contact_id)
        if if_match is not None and if_match != current.version:
            raise StaleVersion("contact", contact_id, current.version)
        updated = change(current)
        if updated is not None:
            if _same(current, updated):
                return current
            updated = updated.model_copy(update={"updated_at": clock.now_iso()})
            added = [g for g in updated.group_ids if g not in current.group_ids]
            _check_groups(updated.kind, added, updated.group_ids)
        try:
            _commit_one(current, updated)
            return updated.model_copy(update={"version": current.version + 1}) if updated else None
        except StaleVersion:
            if if_match is not None:
                latest = store.get(contact_id)
                raise StaleVersion("contact", contact_id, latest.version if latest else None) from None
    raise Conflict(f"contact {contact_id} keeps changing; retry later", id=contact_id)


def _same(a: Contact, b: Contact) -> bool:
    return a.model_dump(exclude={"updated_at"}) == b.model_dump(exclude={"updated_at"})


def _apply_patch(current: Contact, patch: ContactPatch, fields: set[str]) -> Contact:
    values = current.model_dump()
    now = clock.now_iso()
    for name in fields:
        value = getattr(patch, name)
        if name == "attributes":
            merged = dict(current.attributes)
            for key, item in (value or {}).items():
                if item is None:
                    merged.pop(key, None)
                else:
                    merged[key] = item
            values["attributes"] = merged
        elif name == "consent":
            consent = {k: v.model_dump() for k, v in current.consent.items()}
            for channel, item in (value or {}).items():
                if item is None:
                    consent.pop(channel.value, None)
                else:
                    consent[channel.value] = _consent(item, now, current.consent.get(channel.value)).model_dump()
            values["consent"] = consent
        elif name == "bounce":
            values["bounce"] = Bounce(**(value.model_dump() if value else {})).model_dump()
        elif name in ("kind", "status"):
            if value is None:
                raise ValidationFailed.one(name, "cannot be null")
            values[name] = value
        elif name == "group_ids":
            values[name] = sorted(value or [])
        elif name == "time_zone":
            values[name] = value or "UTC"
        else:
            values[name] = value
    contact = Contact(**values)
    if contact.kind is ContactKind.LEAD and contact.group_ids:
        raise ValidationFailed.one("group_ids", "customer groups apply to customers only; this contact is a lead")
    return contact


def _consent(item: Any, now: str, stored: Consent | None = None) -> Consent:
    """Consent from input; an unchanged grant keeps the time it was given."""
    if item.at is None and stored is not None and (stored.granted, stored.source) == (item.granted, item.source):
        return stored
    # Built from already-validated input, so it is constructed, not re-validated.
    at = clock.to_iso(item.at) if item.at else now
    return Consent.model_construct(granted=item.granted, source=item.source, at=at)


def _new_contact(data: ContactIn, now: str) -> Contact:
    if data.kind is ContactKind.LEAD and data.group_ids:
        raise ValidationFailed.one("group_ids", "customer groups apply to customers only; this contact is a lead")
    # Every field comes from a validated ContactIn: construct without validating twice
    # (a bulk import builds a thousand of these per request).
    return Contact.model_construct(
        contact_id=data.contact_id or uuid.uuid4().hex,
        kind=data.kind,
        email=str(data.email) if data.email else None,
        phone=data.phone,
        first_name=data.first_name,
        last_name=data.last_name,
        status=data.status,
        group_ids=sorted(data.group_ids),
        attributes=data.attributes,
        consent={channel.value: _consent(item, now) for channel, item in data.consent.items()},
        time_zone=data.time_zone,
        bounce=Bounce.model_construct(**data.bounce.model_dump(), last_bounce_at=None)
        if data.bounce
        else Bounce.model_construct(hard=False, soft_count=0, last_bounce_at=None),
        created_at=now,
        updated_at=now,
        version=0,
    )


def _check_groups(kind: ContactKind, added: list[str], all_groups: list[str] | None = None) -> None:
    if kind is ContactKind.LEAD and (all_groups if all_groups is not None else added):
        raise ValidationFailed.one("group_ids", "customer groups apply to customers only; this contact is a lead")
    problem = _group_problem(added, group_store.batch_get([g for g in added if is_valid_id(g)]))
    if problem:
        raise ValidationFailed.one("group_ids", problem)


def _group_problem(group_ids: list[str], known: dict[str, Any]) -> str | None:
    for group_id in group_ids:
        group = known.get(group_id)
        if group is None:
            return f"unknown group id {group_id}"
        if group.state is not GroupState.READY:
            return f"group {group_id} is being deleted"
    return None


def _commit_one(before: Contact | None, after: Contact | None) -> None:
    unit = store.change_unit(0, before, after)
    if after is None and before is not None:
        # A deleted contact leaves its segments, badges and audiences in the same transaction.
        operations, counters = segment_store.departure(before.contact_id, before.segment_ids, before.badge_ids)
        unit.operations += operations
        unit.counters += counters
    report = commit_units([unit])
    failure = report.failures.get(0)
    if failure is not None:
        raise _failure_error(failure, before, after)


def _failure_error(failure: Failure, before: Contact | None, after: Contact | None) -> HeraldError:
    subject = after or before
    assert subject is not None
    new_keys = after.natural_keys() if after else set()
    for label in failure.labels:
        if label == store.CONTACT_LABEL:
            if before is None:
                return Conflict(f"contact {subject.contact_id} already exists", id=subject.contact_id)
            return StaleVersion("contact", subject.contact_id, None)
        if label == TOO_LARGE:
            return ValidationFailed.one(
                "group_ids", "too many group changes at once; change at most 40 groups a request"
            )
        if label.startswith(INVALID_PREFIX):
            return ValidationFailed.one(label.removeprefix(INVALID_PREFIX) or "contact", failure.message)
        if label.startswith(store.KEY_LABEL_PREFIX) and label.removeprefix(store.KEY_LABEL_PREFIX) not in new_keys:
            # The old email's key changed under us: the contact itself was changed meanwhile.
            return StaleVersion("contact", subject.contact_id, None)
        if label.startswith(store.KEY_LABEL_PREFIX) and subject.email:
            owner = store.owner_of_email(subject.kind.value, subject.email)
            return Conflict(
                f"another {subject.kind.value} already has email {subject.email}",
                field="email",
                existing_contact_id=owner,
            )
        if segment_store.is_membership_label(label):
            # A membership listed from the (eventually consistent) index changed meanwhile: re-read.
            return StaleVersion("contact", subject.contact_id, None)
        if label.startswith(store.GROUP_LABEL_PREFIX):
            group_id = label.removeprefix(store.GROUP_LABEL_PREFIX)
            return ValidationFailed.one("group_ids", f"group {group_id} does not exist or is being deleted")
    return Conflict(failure.message)


# --------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------


@dataclass
class ContactPage:
    """A page of contacts and the cursor of the next one (None at the end)."""

    items: list[Contact]
    next_cursor: str | None


def list_contacts(
    kind: ContactKind | None = None,
    status: ContactStatus | None = None,
    group_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> ContactPage:
    """List contacts by kind, status and group; every filter reads an index.

    With a group: its membership partition (or the group-status index);
    otherwise the kind/status index, shard by shard. Never a scan.
    """
    limit = max(1, min(limit, MAX_PAGE))
    listing = f"contacts|{kind}|{status}|{group_id}"
    state = decode_cursor(cursor, listing)
    if group_id is not None:
        if kind is ContactKind.LEAD:
            return ContactPage([], None)
        partitions = [store.group_member_partition(group_id, status.value if status else None)]
        records, next_state = store.query_pages(partitions, state, limit)
        found = store.batch_get(r.contact_id for r in records)
        items = [found[r.contact_id] for r in records if r.contact_id in found]
        return ContactPage(items, encode_cursor(next_state, listing))
    kinds = [kind.value] if kind else [k.value for k in ContactKind]
    statuses = [status.value] if status else [s.value for s in ContactStatus]
    records, next_state = store.query_pages(store.kind_status_partitions(kinds, statuses), state, limit)
    return ContactPage([store.from_record(r) for r in records], encode_cursor(next_state, listing))


# --------------------------------------------------------------------------
# Bulk import
# --------------------------------------------------------------------------


@dataclass
class RowOutcome:
    """What happened to one imported row."""

    row: int
    outcome: str  # created | updated | unchanged | rejected
    contact_id: str | None = None
    errors: list[dict[str, str]] | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"row": self.row, "outcome": self.outcome}
        if self.contact_id is not None:
            data["contact_id"] = self.contact_id
        if self.errors:
            data["errors"] = self.errors
        return data


@dataclass
class ImportReport:
    """Per-row outcomes, totals, and the write requests spent."""

    rows: list[RowOutcome]
    write_requests: int

    def totals(self) -> dict[str, int]:
        counts = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
        for row in self.rows:
            counts[row.outcome] += 1
        return counts


def import_contacts(rows: list[Any]) -> ImportReport:
    """Create or update up to 1,000 contacts, reporting each row.

    A row with ``contact_id`` updates that contact (or creates it with that
    id); otherwise a row whose email belongs to a contact of the same kind
    updates it; otherwise it creates a contact. Fields present in a row
    overwrite; absent fields are kept. A row is rejected, with its field
    errors, if it is invalid, repeats an earlier row, names an unknown group
    or loses a race with a concurrent change.
    """
    if len(rows) > MAX_IMPORT_ROWS:
        raise PayloadTooLarge(f"at most {MAX_IMPORT_ROWS} contacts per import; got {len(rows)}", limit=MAX_IMPORT_ROWS)
    outcomes: dict[int, RowOutcome] = {}
    parsed = _parse_rows(rows, outcomes)
    existing = _existing_for(parsed)
    known_groups = group_store.batch_get([g for _, row in parsed for g in row.group_ids])
    now = clock.now_iso()

    planned: list[tuple[int, Contact | None, Contact]] = []
    claimed: dict[str, int] = {}
    for index, row in parsed:
        before = _match(row, existing)
        if before is not None and before.contact_id in claimed:
            # e.g. one row names the contact by id, a later one by its email
            repeated = f"repeats row {claimed[before.contact_id]} (same contact)"
            outcomes[index] = RowOutcome(index, "rejected", before.contact_id, [{"field": "row", "problem": repeated}])
            continue
        if before is not None:
            claimed[before.contact_id] = index
        try:
            after = _import_target(row, before, now)
        except ValidationFailed as exc:
            outcomes[index] = RowOutcome(index, "rejected", row.contact_id, exc.errors)
            continue
        problem = _group_problem([g for g in after.group_ids if not before or g not in before.group_ids], known_groups)
        if problem:
            outcomes[index] = RowOutcome(
                index, "rejected", after.contact_id, [{"field": "group_ids", "problem": problem}]
            )
            continue
        if before is not None and _same(before, after):
            outcomes[index] = RowOutcome(index, "unchanged", before.contact_id)
            continue
        planned.append((index, before, after))

    report = commit_units([store.change_unit(i, before, after) for i, (_, before, after) in enumerate(planned)])
    _record_commit(planned, report, outcomes)
    return ImportReport([outcomes[i] for i in sorted(outcomes)], report.requests)


def _parse_rows(rows: list[Any], outcomes: dict[int, RowOutcome]) -> list[tuple[int, ContactIn]]:
    parsed: list[tuple[int, ContactIn]] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(rows):
        try:
            row = ContactIn.model_validate(raw)
        except ValidationError as exc:
            outcomes[index] = RowOutcome(index, "rejected", None, field_errors(exc))
            continue
        identities = []
        if row.contact_id:
            identities.append("id:" + row.contact_id)
        if row.email:
            identities.append(email_key(row.kind.value, str(row.email)))
        repeated = next((seen[i] for i in identities if i in seen), None)
        if repeated is not None:
            outcomes[index] = RowOutcome(
                index, "rejected", row.contact_id, [{"field": "row", "problem": f"repeats row {repeated}"}]
            )
            continue
        for identity in identities:
            seen[identity] = index
        parsed.append((index, row))
    return parsed


def _existing_for(parsed: list[tuple[int, ContactIn]]) -> dict[str, Contact]:
    """Existing contacts by ``id:<id>`` and by email key, read in batches."""
    ids = [row.contact_id for _, row in parsed if row.contact_id]
    keys = [email_key(row.kind.value, str(row.email)) for _, row in parsed if row.email and not row.contact_id]
    owners = store.resolve_email_keys(keys)
    found = store.batch_get([*ids, *owners.values()])
    existing = {"id:" + cid: contact for cid, contact in found.items()}
    for key, contact_id in owners.items():
        if contact_id in found:
            existing[key] = found[contact_id]
    return existing


def _match(row: ContactIn, existing: dict[str, Contact]) -> Contact | None:
    if row.contact_id:
        return existing.get("id:" + row.contact_id)
    if row.email:
        return existing.get(email_key(row.kind.value, str(row.email)))
    return None


def _import_target(row: ContactIn, before: Contact | None, now: str) -> Contact:
    if before is None:
        return _new_contact(row, now)
    patch = ContactPatch.model_validate(row.model_dump(include=row.model_fields_set - {"contact_id"}))
    updated = _apply_patch(before, patch, patch.model_fields_set)
    return updated.model_copy(update={"updated_at": now})


def _record_commit(
    planned: list[tuple[int, Contact | None, Contact]], report: CommitReport, outcomes: dict[int, RowOutcome]
) -> None:
    for position, (index, before, after) in enumerate(planned):
        failure = report.failures.get(position)
        if failure is None:
            outcomes[index] = RowOutcome(index, "created" if before is None else "updated", after.contact_id)
            continue
        error = _failure_error(failure, before, after)
        errors = error.details.get("errors") or [
            {"field": str(error.details.get("field", "row")), "problem": error.message}
        ]
        outcomes[index] = RowOutcome(index, "rejected", after.contact_id, errors)


# --------------------------------------------------------------------------
# Bulk group assignment
# --------------------------------------------------------------------------


def bulk_membership(group_id: str, contact_ids: list[str], assign: bool) -> list[dict[str, Any]]:
    """Assign (or unassign) many contacts to a group, one outcome per id.

    Outcomes: ``assigned``/``unassigned``, ``unchanged`` (already so),
    ``not_found``, ``rejected`` (with the reason).
    """
    if len(contact_ids) > MAX_IMPORT_ROWS:
        raise PayloadTooLarge(f"at most {MAX_IMPORT_ROWS} contacts per request; got {len(contact_ids)}")
    group = group_store.get(group_id) if is_valid_id(group_id) else None
    if group is None:
        raise NotFound(f"group {group_id} does not exist", id=group_id)
    if assign and group.state is not GroupState.READY:
        raise Conflict(f"group {group_id} is being deleted", id=group_id)
    unique = list(dict.fromkeys(contact_ids))
    found = store.batch_get(unique)
    now = clock.now_iso()
    results: dict[str, dict[str, Any]] = {}
    planned: list[tuple[str, Contact, Contact]] = []
    for contact_id in unique:
        current = found.get(contact_id)
        if current is None:
            results[contact_id] = {"contact_id": contact_id, "outcome": "not_found"}
        elif assign and current.kind is ContactKind.LEAD:
            results[contact_id] = {
                "contact_id": contact_id,
                "outcome": "rejected",
                "reason": "customer groups apply to customers only; this contact is a lead",
            }
        elif (group_id in current.group_ids) == assign:
            results[contact_id] = {"contact_id": contact_id, "outcome": "unchanged"}
        else:
            groups = (
                sorted({*current.group_ids, group_id}) if assign else [g for g in current.group_ids if g != group_id]
            )
            planned.append((contact_id, current, current.model_copy(update={"group_ids": groups, "updated_at": now})))
    report = commit_units([store.change_unit(i, before, after) for i, (_, before, after) in enumerate(planned)])
    for position, (contact_id, before, after) in enumerate(planned):
        failure = report.failures.get(position)
        if failure is None:
            results[contact_id] = {"contact_id": contact_id, "outcome": "assigned" if assign else "unassigned"}
        else:
            reason = _failure_error(failure, before, after).message
            results[contact_id] = {"contact_id": contact_id, "outcome": "rejected", "reason": reason}
    return [results[cid] for cid in unique]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Turn pydantic errors into ``{"field", "problem"}`` pairs."""
    errors = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "row"
        problem = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        errors.append({"field": location, "problem": problem.removeprefix("Value error, ")})
    return errors


def _validated(check: Any, field: str) -> None:
    try:
        check()
    except ValueError as exc:
        raise ValidationFailed.one(field, str(exc)) from exc
