"""Lead capture forms: the definitions people edit, and the public submission path.

A submission is checked in this order, each step cheaper than the next and
each rejection counted on the form and as a metric:

1. the form exists (else 404, not counted: there is nothing to count on);
2. the source IP has a slot left in this minute (else 429, ``rejected_rate_limited``);
   every attempt takes a slot, rejected ones included, so a bot gains nothing
   by sending garbage;
3. the form is published (else 409, ``rejected_malformed``);
4. the body is a JSON object (else 400, ``rejected_malformed``);
5. the honeypot field is empty (else ``rejected_spam``, answered exactly like
   a success: see docs/decisions.md);
6. the fields match the form (else 422 naming each field, ``rejected_malformed``).

Then the lead is created or updated (found by email among leads), its
consent for the collected channels recorded with source ``form:<id>``, the
capture recorded in the memberships table and ``submissions`` counted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from herald import clock
from herald.contacts import service as contacts
from herald.contacts.model import ConsentIn, ContactIn, ContactKind, ContactPatch, is_valid_id
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import BadRequest, Conflict, HeraldError, NotFound, StaleVersion, ValidationFailed
from herald.forms.model import STANDARD_FIELDS, Form, FormIn, FormPatch, honeypot_problem, submission_model
from herald.observability import logger, metrics
from herald.store import contacts as contact_store
from herald.store import forms as store

MAX_PAGE = 100
EDIT_RETRIES = 5
UPSERT_RETRIES = 3
DELETE_PAGE = 25
DELETE_PAGES_PER_CALL = 40

# What every accepted (or silently dropped spam) submission is answered with.
RECEIVED: dict[str, Any] = {"status": "received"}

_METRICS = {
    "rejected_malformed": "FormSubmissionMalformed",
    "rejected_spam": "FormSubmissionSpam",
    "rejected_rate_limited": "FormSubmissionRateLimited",
}


class FormClosed(Conflict):
    """The form exists but is not published, so it accepts no submissions."""

    code = "form_not_published"


class RateLimited(HeraldError):
    """Too many submissions from one source IP to one form this minute."""

    status = 429
    code = "rate_limited"


# --------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------


def create_form(data: FormIn) -> Form:
    """Create a form; raises ``Conflict`` if the id is taken."""
    _check_honeypot(data.honeypot_field, data.fields)
    now = clock.now_iso()
    form = Form(
        id=data.id or uuid.uuid4().hex,
        name=data.name,
        description=data.description,
        fields=data.fields,
        consent=data.consent,
        honeypot_field=data.honeypot_field,
        rate_limit_per_minute=data.rate_limit_per_minute,
        published=data.published,
        created_at=now,
        updated_at=now,
        version=0,
    )
    if not store.create(form):
        raise Conflict(f"form {form.id} already exists", id=form.id)
    return form.model_copy(update={"version": 1})


def get_form(form_id: str) -> Form:
    """One form with its counters; raises ``NotFound``."""
    form = store.get(form_id) if is_valid_id(form_id) else None
    if form is None:
        raise NotFound(f"form {form_id} does not exist", id=form_id)
    return form


@dataclass
class FormPage:
    """A page of forms and the cursor of the next one."""

    items: list[Form]
    next_cursor: str | None


def list_forms(cursor: str | None = None, limit: int = 50) -> FormPage:
    """Forms in id order (one catalog partition: a Query)."""
    limit = max(1, min(limit, MAX_PAGE))
    records, state = contact_store.query_pages([store.page], decode_cursor(cursor, "forms"), limit)
    return FormPage([store.from_record(r) for r in records], encode_cursor(state, "forms"))


def update_form(form_id: str, patch: FormPatch, if_match: int | None = None) -> Form:
    """Change a form (409 ``stale_version`` on a stale ``If-Match``; else re-applied to the newest)."""
    fields = patch.model_fields_set
    if "name" in fields and patch.name is None:
        raise ValidationFailed.one("name", "cannot be null")
    for name in ("fields", "consent", "honeypot_field", "rate_limit_per_minute", "published"):
        if name in fields and getattr(patch, name) is None:
            raise ValidationFailed.one(name, "cannot be null")
    for _ in range(EDIT_RETRIES):
        current = get_form(form_id)
        if if_match is not None and if_match != current.version:
            raise StaleVersion("form", form_id, current.version)
        changes = {name: getattr(patch, name) for name in fields}
        updated = current.model_copy(update={**changes, "updated_at": clock.now_iso()})
        _check_honeypot(updated.honeypot_field, updated.fields)
        if store.update(current, updated):
            return get_form(form_id)
        if if_match is not None:
            latest = store.get(form_id)
            raise StaleVersion("form", form_id, latest.version if latest else None)
    raise Conflict(f"form {form_id} keeps changing; retry later", id=form_id)


def delete_form(form_id: str) -> bool:
    """Unpublish, forget the captured-lead items, then delete the form; False if items remain (call again).

    The leads themselves stay: they are contacts in their own right.
    """
    get_form(form_id)
    store.unpublish(form_id)
    for _ in range(DELETE_PAGES_PER_CALL):
        page = list(store.form_member_ids(form_id, DELETE_PAGE))
        if not page:
            store.delete(form_id)
            return True
        store.delete_members(form_id, page)
    return False


def members(form_id: str, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The leads a form captured, with when they were first captured."""
    get_form(form_id)
    listing = f"form-members|{form_id}"

    def partition(last_key: dict[str, Any] | None, page_limit: int) -> Any:
        return store.form_members(form_id, last_key, page_limit)

    records, state = contact_store.query_pages([partition], decode_cursor(cursor, listing), max(1, min(limit, 100)))
    items = [{"contact_id": r.contact_id, "added_at": r.added_at} for r in records]
    return items, encode_cursor(state, listing)


def _check_honeypot(honeypot_field: str, fields: Any) -> None:
    problem = honeypot_problem(honeypot_field, fields)
    if problem:
        raise ValidationFailed.one("honeypot_field", problem)


# --------------------------------------------------------------------------
# Public submissions
# --------------------------------------------------------------------------


def submit(form_id: str, raw_body: str | None, source_ip: str) -> dict[str, Any]:
    """Accept one public submission; see the module docstring for the order of checks."""
    form = store.get(form_id) if is_valid_id(form_id) else None
    if form is None:
        raise NotFound(f"form {form_id} does not exist", id=form_id)
    now = clock.now()
    if not store.take_rate_slot(form.id, source_ip, now, form.rate_limit_per_minute):
        _reject(form, "rejected_rate_limited", source_ip, "rate limit")
        raise RateLimited(
            f"at most {form.rate_limit_per_minute} submissions a minute from one address; retry in a minute",
            retry_after_seconds=60 - now.second,
        )
    if not form.published:
        _reject(form, "rejected_malformed", source_ip, "form not published")
        raise FormClosed(f"form {form_id} is not published", id=form_id, field="published")
    body = _json_object(form, raw_body, source_ip)
    if _filled(body.pop(form.honeypot_field, None)):
        # Answer as if accepted, so a bot learns nothing (docs/decisions.md); nothing is stored.
        _reject(form, "rejected_spam", source_ip, "honeypot filled")
        return RECEIVED
    try:
        submission = submission_model(form).model_validate(body)
    except ValidationError as exc:
        errors = contacts.field_errors(exc)
        _reject(form, "rejected_malformed", source_ip, "; ".join(f"{e['field']}: {e['problem']}" for e in errors))
        raise ValidationFailed(errors) from exc
    values = submission.model_dump(exclude_none=True)
    try:
        contact_id = _upsert_lead(form, values)
    except ValidationFailed as exc:
        _reject(form, "rejected_malformed", source_ip, exc.message)
        raise
    store.add_member(form.id, contact_id, clock.now_iso())
    store.count(form.id, "submissions")
    metrics.add_metric(name="FormSubmissionAccepted", unit=MetricUnit.Count, value=1)
    return RECEIVED


def _json_object(form: Form, raw_body: str | None, source_ip: str) -> dict[str, Any]:
    try:
        body = json.loads(raw_body or "")
    except ValueError:
        _reject(form, "rejected_malformed", source_ip, "body is not JSON")
        raise BadRequest("request body is not valid JSON", field="body") from None
    if not isinstance(body, dict):
        _reject(form, "rejected_malformed", source_ip, "body is not an object")
        raise ValidationFailed.one("body", "must be a JSON object of the form's fields")
    return body


def _filled(value: Any) -> bool:
    return value not in (None, "", False) and not (isinstance(value, str) and not value.strip())


def _reject(form: Form, counter: str, source_ip: str, reason: str) -> None:
    store.count(form.id, counter)
    metrics.add_metric(name=_METRICS[counter], unit=MetricUnit.Count, value=1)
    logger.info("form submission rejected", form_id=form.id, rejection=counter, source_ip=source_ip, reason=reason)


def _upsert_lead(form: Form, values: dict[str, Any]) -> str:
    """Create the lead owning the email, or update it; returns its id.

    A consent tick grants; an unticked box only records "not granted" when the
    lead has no answer for that channel yet: a form never withdraws consent
    given elsewhere (withdrawal is the unsubscribe path).
    """
    email = str(values.pop("email"))
    ticks: dict[str, bool] = values.pop("consent", {}) or {}
    standard = {k: v for k, v in values.items() if k in STANDARD_FIELDS}
    attributes = {k: v for k, v in values.items() if k not in STANDARD_FIELDS}
    source = f"form:{form.id}"
    for _ in range(UPSERT_RETRIES):
        owner = contact_store.owner_of_email(ContactKind.LEAD.value, email)
        if owner is None:
            consent = {channel: ConsentIn(granted=granted, source=source) for channel, granted in ticks.items()}
            data = _contact_input(email, standard, attributes, consent)
            try:
                return contacts.create_contact(data).contact_id
            except Conflict:
                continue  # created concurrently by another submission with this email: update it
        try:
            existing = contacts.get_contact(owner)
        except NotFound:
            continue  # deleted meanwhile
        consent_patch = {
            channel: ConsentIn(granted=granted, source=source)
            for channel, granted in ticks.items()
            if granted or channel not in existing.consent
        }
        patch: dict[str, Any] = dict(standard)
        if attributes:
            patch["attributes"] = attributes
        if consent_patch:
            patch["consent"] = consent_patch
        try:
            return contacts.update_contact(owner, ContactPatch(**patch)).contact_id
        except NotFound:
            continue
    raise Conflict("the lead for this email keeps changing; retry later", field="email")


def _contact_input(
    email: str, standard: dict[str, Any], attributes: dict[str, Any], consent: dict[Any, ConsentIn]
) -> ContactIn:
    try:
        return ContactIn(kind=ContactKind.LEAD, email=email, attributes=attributes, consent=consent, **standard)
    except ValidationError as exc:
        raise ValidationFailed(contacts.field_errors(exc)) from exc
