"""Lead capture form models: the definition people edit, and what a submission may carry.

A form names the fields it accepts (``email`` always, required; ``first_name``,
``last_name``, ``phone``; any other name is a free attribute of the lead), the
channels it collects consent for with the wording shown, a honeypot field and
a per-source-IP rate limit. A submission is checked against the form it is
sent to by a model built from the form (:func:`submission_model`), so unknown
fields are refused by name exactly as everywhere else in the API.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    create_model,
    field_validator,
)

from herald.contacts.model import Channel, ContactId, Name, Phone, Strict

MAX_FIELDS = 50
MAX_VALUE_CHARS = 1000
DEFAULT_HONEYPOT = "website"
DEFAULT_RATE_LIMIT = 10

# Fields a lead has as such; every other field name is a free attribute.
STANDARD_FIELDS = ("email", "first_name", "last_name", "phone")
# Names a form field or honeypot may not take: they mean something else in a submission.
RESERVED_NAMES = frozenset({"consent", "contact_id", "kind", "status", "attributes", "group_ids"})

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

FormName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Wording = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
RateLimit = Annotated[int, Field(ge=1, le=600)]
AttributeValue = Annotated[str, StringConstraints(max_length=MAX_VALUE_CHARS)] | bool | int | float


def _field_name(value: str) -> str:
    if not _FIELD_NAME.match(value):
        raise ValueError("must start with a letter and use letters, digits and _ (at most 64)")
    if value in RESERVED_NAMES:
        raise ValueError(f"{value!r} is reserved")
    return value


class FormField(Strict):
    """One field the form accepts: a standard lead field or a free attribute."""

    name: str
    required: bool = False
    label: Label | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _field_name(value)


class ConsentWording(Strict):
    """The consent text shown beside a channel's checkbox."""

    wording: Wording


def _check_fields(fields: list[FormField]) -> list[FormField]:
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise ValueError("must not repeat a field name")
    email = next((f for f in fields if f.name == "email"), None)
    if email is None:
        # Every form collects an email: leads are found by it.
        return [FormField(name="email", required=True), *fields]
    if not email.required:
        raise ValueError("email is always required (leads are found by it)")
    return fields


def honeypot_problem(honeypot_field: str, fields: list[FormField]) -> str | None:
    """Why a honeypot name cannot be used with these fields, if it cannot."""
    if honeypot_field in {f.name for f in fields} | set(STANDARD_FIELDS):
        return "must not be one of the form's fields (it must stay empty for people)"
    return None


Fields = Annotated[list[FormField], Field(max_length=MAX_FIELDS)]


class FormIn(Strict):
    """A new lead capture form (POST /forms)."""

    id: ContactId | None = None
    name: FormName
    description: Description | None = None
    fields: Fields = Field(default_factory=lambda: [FormField(name="email", required=True)])
    consent: dict[Channel, ConsentWording] = Field(default_factory=dict)
    honeypot_field: str = DEFAULT_HONEYPOT
    rate_limit_per_minute: RateLimit = DEFAULT_RATE_LIMIT
    published: bool = False

    @field_validator("fields")
    @classmethod
    def _valid_fields(cls, value: list[FormField]) -> list[FormField]:
        return _check_fields(value)

    @field_validator("honeypot_field")
    @classmethod
    def _valid_honeypot(cls, value: str) -> str:
        return _field_name(value)


class FormPatch(Strict):
    """A partial update (PATCH /forms/{id}): present fields replace the stored ones.

    ``description: null`` clears it; ``name`` cannot be cleared.
    """

    name: FormName | None = None
    description: Description | None = None
    fields: Fields | None = None
    consent: dict[Channel, ConsentWording] | None = None
    honeypot_field: str | None = None
    rate_limit_per_minute: RateLimit | None = None
    published: bool | None = None

    @field_validator("fields")
    @classmethod
    def _valid_fields(cls, value: list[FormField] | None) -> list[FormField] | None:
        return None if value is None else _check_fields(value)

    @field_validator("honeypot_field")
    @classmethod
    def _valid_honeypot(cls, value: str | None) -> str | None:
        return None if value is None else _field_name(value)


class FormStats(BaseModel):
    """What happened to a form's submissions."""

    submissions: int = 0
    rejected_malformed: int = 0
    rejected_spam: int = 0
    rejected_rate_limited: int = 0


class Form(BaseModel):
    """A lead capture form as Herald returns it."""

    id: str
    name: str
    description: str | None = None
    fields: list[FormField]
    consent: dict[Channel, ConsentWording] = Field(default_factory=dict)
    honeypot_field: str = DEFAULT_HONEYPOT
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT
    published: bool = False
    stats: FormStats = Field(default_factory=FormStats)
    created_at: str
    updated_at: str
    version: int


# --------------------------------------------------------------------------
# Submissions
# --------------------------------------------------------------------------

_STANDARD_TYPES: dict[str, Any] = {
    "email": EmailStr,
    "first_name": Name,
    "last_name": Name,
    "phone": Phone,
}


class _Submission(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


_models: dict[tuple[tuple[tuple[str, bool], ...], tuple[str, ...]], type[BaseModel]] = {}


def submission_model(form: Form) -> type[BaseModel]:
    """The pydantic model a submission to this version of the form must satisfy.

    Unknown fields are refused ("unknown field", named), required fields must
    be present, and ``consent`` accepts only the channels the form collects.
    """
    # Keyed by what shapes the model, so an edited (or deleted and re-created) form never reuses a stale one.
    key = (tuple((f.name, f.required) for f in form.fields), tuple(sorted(c.value for c in form.consent)))
    model = _models.get(key)
    if model is not None:
        return model
    definitions: dict[str, Any] = {}
    for item in form.fields:
        annotation = _STANDARD_TYPES.get(item.name, AttributeValue)
        definitions[item.name] = (annotation, ...) if item.required else (annotation | None, None)
    if form.consent:
        channels: dict[str, Any] = {channel.value: (bool | None, None) for channel in form.consent}
        consent = create_model(f"Consent_{len(_models)}", __base__=_Submission, **channels)
        definitions["consent"] = (consent | None, None)
    model = create_model(f"Submission_{len(_models)}", __base__=_Submission, **definitions)
    if len(_models) > 256:
        _models.clear()
    _models[key] = model
    return model
