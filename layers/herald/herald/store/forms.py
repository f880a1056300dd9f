"""Lead capture form persistence: definitions, counters, rate-limit windows, captured leads.

A form is ``(form, <id>)`` in the catalog (access pattern K17). Its counters
live on the same item but are only ever changed through the unversioned
:class:`FormCounterRecord` view, so counting submissions never bumps the
version people edit with. The rate limit is one small item per form, source
IP and minute (``ratelimit#form#<id>``, ``<ip>#<YYYY-MM-DDTHH:MM>``), bumped
by a conditional ``ADD``. A captured lead is ``form#<id>, <contact id>`` in the
memberships table, which lead campaigns query through :func:`form_members`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pynamodb.exceptions import PutError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.pagination import ResultIterator

from herald.forms.model import ConsentWording, Form, FormField, FormStats
from herald.store.tables import FormCounterRecord, FormRecord, MembershipRecord, RateLimitRecord
from herald.store.transactions import is_condition_failure

FORM_ENTITY = "form"
FORM_PREFIX = "form#"
LEAD = "lead"
COUNTERS = ("submissions", "rejected_malformed", "rejected_spam", "rejected_rate_limited")
# Rate-limit items outlive their minute by this much (read by a TTL if the table gets one).
RATE_WINDOW_TTL_S = 3600


def membership_key(form_id: str) -> str:
    """The memberships-table partition of the leads a form captured."""
    return FORM_PREFIX + form_id


def rate_partition(form_id: str) -> str:
    """The catalog partition of a form's rate-limit windows."""
    return f"ratelimit#form#{form_id}"


# --------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------


def _spec(form: Form) -> dict[str, Any]:
    return {
        "fields": [f.model_dump(exclude_none=True) for f in form.fields],
        "consent": {channel.value: c.model_dump() for channel, c in form.consent.items()},
    }


def to_record(form: Form, stored_version: int | None) -> FormRecord:
    record = FormRecord(
        entity_type=FORM_ENTITY,
        entity_id=form.id,
        name=form.name,
        description=form.description,
        spec=_spec(form),
        honeypot_field=form.honeypot_field,
        rate_limit_per_minute=form.rate_limit_per_minute,
        published=form.published,
        created_at=form.created_at,
        updated_at=form.updated_at,
    )
    if stored_version is not None:
        record.version = stored_version
    return record


def from_record(record: FormRecord) -> Form:
    spec = record.spec or {}
    return Form(
        id=record.entity_id,
        name=record.name,
        description=record.description,
        fields=[FormField(**f) for f in spec.get("fields", [])],
        consent={channel: ConsentWording(**c) for channel, c in (spec.get("consent") or {}).items()},
        honeypot_field=record.honeypot_field,
        rate_limit_per_minute=int(record.rate_limit_per_minute),
        published=bool(record.published),
        stats=FormStats(**{name: int(getattr(record, name) or 0) for name in COUNTERS}),
        created_at=record.created_at,
        updated_at=record.updated_at,
        version=int(record.version or 0),
    )


# --------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------


def get(form_id: str, consistent: bool = True) -> Form | None:
    """One form, or None."""
    try:
        return from_record(FormRecord.get(FORM_ENTITY, form_id, consistent_read=consistent))
    except FormRecord.DoesNotExist:
        return None


def page(last_key: dict[str, Any] | None, limit: int) -> ResultIterator[FormRecord]:
    """A page of forms, ordered by id."""
    return FormRecord.query(FORM_ENTITY, limit=limit, last_evaluated_key=last_key)


def create(form: Form) -> bool:
    """Store a new form; False if the id is taken."""
    try:
        to_record(form, None).save(condition=FormRecord.entity_id.does_not_exist())
    except PutError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


def update(before: Form, after: Form) -> bool:
    """Write the edited fields if the version is still ``before.version``; False if not.

    Only what people edit is written, so counters moved meanwhile are kept.
    """
    record = to_record(before, before.version)
    actions: list[Action] = [
        FormRecord.name.set(after.name),
        FormRecord.spec.set(_spec(after)),
        FormRecord.honeypot_field.set(after.honeypot_field),
        FormRecord.rate_limit_per_minute.set(after.rate_limit_per_minute),
        FormRecord.published.set(after.published),
        FormRecord.updated_at.set(after.updated_at),
        FormRecord.description.set(after.description)
        if after.description is not None
        else FormRecord.description.remove(),
    ]
    try:
        record.update(actions=actions)  # pynamodb adds the version condition and increments it
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


def unpublish(form_id: str) -> None:
    """Stop a form accepting submissions without a new version (start of a deletion)."""
    counter = FormCounterRecord(entity_type=FORM_ENTITY, entity_id=form_id)
    with contextlib.suppress(UpdateError):
        counter.update(actions=[FormCounterRecord.published.set(False)], condition=FormCounterRecord.entity_id.exists())


def delete(form_id: str) -> None:
    """Delete the form item (its members must be gone first)."""
    FormRecord(entity_type=FORM_ENTITY, entity_id=form_id).delete(add_version_condition=False)


# --------------------------------------------------------------------------
# Counters and rate limit
# --------------------------------------------------------------------------


def count(form_id: str, counter: str) -> None:
    """Add one to a form's counter; a form deleted meanwhile is not re-created."""
    assert counter in COUNTERS
    record = FormCounterRecord(entity_type=FORM_ENTITY, entity_id=form_id)
    try:
        record.update(
            actions=[getattr(FormCounterRecord, counter).add(1)],
            condition=FormCounterRecord.entity_id.exists(),
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise


def take_rate_slot(form_id: str, source_ip: str, now: datetime, limit: int) -> bool:
    """Count one submission from ``source_ip`` in this minute; False if the minute's ``limit`` is used up.

    One conditional ``ADD`` on a small item per form, IP and minute: concurrent
    submissions can never together exceed the limit.
    """
    minute = now.strftime("%Y-%m-%dT%H:%M")
    record = RateLimitRecord(entity_type=rate_partition(form_id), entity_id=f"{source_ip}#{minute}")
    expires_at = int(now.timestamp()) + RATE_WINDOW_TTL_S
    try:
        record.update(
            actions=[RateLimitRecord.hits.add(1), RateLimitRecord.expires_at.set(expires_at)],
            condition=RateLimitRecord.hits.does_not_exist() | (RateLimitRecord.hits < limit),
        )
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


# --------------------------------------------------------------------------
# Captured leads
# --------------------------------------------------------------------------


def add_member(form_id: str, contact_id: str, at: str) -> bool:
    """Record that the form captured a lead; False if it already had (the first capture time is kept)."""
    record = MembershipRecord(
        group_key=membership_key(form_id), contact_id=contact_id, kind=LEAD, added_at=at, source="form"
    )
    try:
        record.save(condition=MembershipRecord.contact_id.does_not_exist())
    except PutError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


def form_members(
    form_id: str, last_key: dict[str, Any] | None = None, limit: int = 100
) -> ResultIterator[MembershipRecord]:
    """A page of the leads a form captured, by contact id (``group_key = form#<id>``).

    Campaign targeting reads forms through this; pass the iterator's
    ``last_evaluated_key`` back for the next page. A membership may outlive a
    deleted lead, so callers skip contact ids that no longer resolve.
    """
    return MembershipRecord.query(
        membership_key(form_id), limit=limit, last_evaluated_key=last_key, consistent_read=True
    )


def form_member_ids(form_id: str, limit: int) -> Iterator[str]:
    """Contact ids of up to ``limit`` leads a form captured."""
    for record in form_members(form_id, None, limit):
        yield record.contact_id


def delete_members(form_id: str, contact_ids: list[str]) -> None:
    """Delete captured-lead items (a form's deletion, page by page)."""
    with MembershipRecord.batch_write() as batch:
        for contact_id in contact_ids:
            batch.delete(MembershipRecord(group_key=membership_key(form_id), contact_id=contact_id))
