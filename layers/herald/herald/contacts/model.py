"""Contact domain models: what the API accepts and returns, with their rules.

Validation lives here so the API, bulk import and later lead forms apply the
same rules: email syntax, E.164 phone numbers, IANA time zones, statuses,
customer-group ids, free attributes.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator

MAX_GROUPS_PER_CONTACT = 25
MAX_ATTRIBUTES = 100
# Well under DynamoDB's 400 KB item limit, leaving room for the rest of the contact.
MAX_ATTRIBUTES_BYTES = 100_000


class ContactKind(StrEnum):
    """Campaign audience type: a customer or a lead."""

    CUSTOMER = "customer"
    LEAD = "lead"


class ContactStatus(StrEnum):
    """Customer status used by status targeting."""

    ACTIVE = "Active"
    INACTIVE = "Inactive"


class Channel(StrEnum):
    """Outbound channels that need the contact's consent."""

    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_ID_PATTERN = re.compile(_ID)


def is_valid_id(value: str) -> bool:
    """True if ``value`` has the shape of a Herald id (so it can name something)."""
    return bool(_ID_PATTERN.match(value))


_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_ZONES = frozenset(available_timezones())


def _e164(value: str) -> str:
    if not _E164.match(value):
        raise ValueError("must be an E.164 phone number such as +447700900123")
    return value


def _iana_zone(value: str) -> str:
    if value not in _ZONES:
        raise ValueError("must be an IANA time zone such as Europe/Prague")
    try:
        ZoneInfo(value)
    except ZoneInfoNotFoundError as exc:  # pragma: no cover - guarded by _ZONES
        raise ValueError("must be an IANA time zone such as Europe/Prague") from exc
    return value


def _unique_ids(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat a group id")
    return values


MAX_NESTING = 16
# DynamoDB numbers: up to 38 significant digits, magnitude within 1E-130 .. 9.99E+125.
_LARGEST_NUMBER = 9.9999999999999999e125
_SMALLEST_NUMBER = 1e-130


def _storable(path: str, value: Any, depth: int = 0) -> None:
    """Refuse values DynamoDB cannot store, naming where they are."""
    if depth > MAX_NESTING:
        raise ValueError(f"{path} is nested more than {MAX_NESTING} levels deep")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if len(str(abs(value))) > 38:
            raise ValueError(f"{path} has more than 38 digits")
        return
    if isinstance(value, float):
        if not math.isfinite(value) or (value != 0 and not _SMALLEST_NUMBER <= abs(value) <= _LARGEST_NUMBER):
            raise ValueError(f"{path} is not a number DynamoDB can store")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not key:
                raise ValueError(f"{path} has an empty key")
            _storable(f"{path}.{key}", item, depth + 1)
        return
    if isinstance(value, list):
        for position, item in enumerate(value):
            _storable(f"{path}[{position}]", item, depth + 1)
        return
    raise ValueError(f"{path} must be JSON (string, number, boolean, null, list or object)")


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(values, default=str)) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes must be at most {MAX_ATTRIBUTES_BYTES:,} bytes of JSON")
    for name, value in values.items():
        _storable(name, value)
    for name in values:
        if not _ATTRIBUTE_NAME.match(name):
            raise ValueError(f"attribute name {name!r} must start with a letter and use letters, digits, _")
    if "birthday" in values and values["birthday"] is not None:
        _iso_date("birthday", values["birthday"])
    if "signup_date" in values and values["signup_date"] is not None:
        _iso_date("signup_date", values["signup_date"])
    return values


def _iso_date(name: str, value: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"attribute {name} must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"attribute {name} must be a date YYYY-MM-DD") from exc


ContactId = Annotated[str, StringConstraints(pattern=_ID)]
GroupId = Annotated[str, StringConstraints(pattern=_ID)]
Phone = Annotated[str, AfterValidator(_e164)]
TimeZone = Annotated[str, AfterValidator(_iana_zone)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
GroupIds = Annotated[list[GroupId], Field(max_length=MAX_GROUPS_PER_CONTACT), AfterValidator(_unique_ids)]
Attributes = Annotated[dict[str, Any], Field(max_length=MAX_ATTRIBUTES), AfterValidator(_attributes)]


class Strict(BaseModel):
    """Input models refuse unknown fields, so a typo is a 422 rather than lost data."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class ConsentIn(Strict):
    """Consent for one channel: granted or withdrawn, where it came from and when."""

    granted: bool
    source: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    at: datetime | None = None

    @field_validator("at")
    @classmethod
    def _plausible(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)  # naive times are UTC
        if not _EARLIEST <= moment < _LATEST:
            raise ValueError("must be between 1970 and 2100")
        return moment


class Consent(BaseModel):
    """Stored consent for one channel."""

    granted: bool
    source: str
    at: str


class BounceIn(Strict):
    """Bounce state, settable when importing from another system."""

    hard: bool = False
    soft_count: Annotated[int, Field(ge=0)] = 0


class Bounce(BaseModel):
    """Bounce state: a hard bounce, and the count of soft bounces."""

    hard: bool = False
    soft_count: int = 0
    last_bounce_at: str | None = None


class ContactIn(Strict):
    """A new contact (POST /contacts and each bulk import row)."""

    contact_id: ContactId | None = None
    kind: ContactKind
    email: EmailStr | None = None
    phone: Phone | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    status: ContactStatus = ContactStatus.ACTIVE
    group_ids: GroupIds = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=dict)
    consent: dict[Channel, ConsentIn] = Field(default_factory=dict)
    time_zone: TimeZone = "UTC"
    bounce: BounceIn | None = None


class ContactPatch(Strict):
    """A partial update (PATCH /contacts/{id}).

    Top-level fields that are present replace the stored value (``null``
    clears an optional one); ``attributes`` and ``consent`` merge key by key,
    a ``null`` value removing that key, as JSON Merge Patch does.
    """

    kind: ContactKind | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    status: ContactStatus | None = None
    group_ids: GroupIds | None = None
    attributes: dict[str, Any] | None = None
    consent: dict[Channel, ConsentIn | None] | None = None
    time_zone: TimeZone | None = None
    bounce: BounceIn | None = None


class Contact(BaseModel):
    """A contact as Herald returns it."""

    contact_id: str
    kind: ContactKind
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    status: ContactStatus
    group_ids: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)
    consent: dict[str, Consent] = Field(default_factory=dict)
    time_zone: str
    bounce: Bounce = Field(default_factory=Bounce)
    created_at: str
    updated_at: str
    version: int
    # Derived, read-only: written by segment recalculation, activity and event ingestion.
    segment_ids: list[str] = Field(default_factory=list)
    badge_ids: list[str] = Field(default_factory=list)
    activity: dict[str, list[list[Any]]] = Field(default_factory=dict)
    campaigns_received: list[str] = Field(default_factory=list)
    campaigns_opened: list[str] = Field(default_factory=list)
    campaigns_clicked: list[str] = Field(default_factory=list)

    def natural_keys(self) -> set[str]:
        """Unique keys this contact owns (one email per kind)."""
        return {email_key(self.kind, self.email)} if self.email else set()


def email_key(kind: str, email: str) -> str:
    """The unique key of an email address within a kind of contact."""
    return f"email:{kind}:{email.strip().lower()}"


def validate_attribute_patch(values: dict[str, Any]) -> dict[str, Any]:
    """Validate an attributes merge patch (``None`` values delete keys)."""
    return _attributes(values)
