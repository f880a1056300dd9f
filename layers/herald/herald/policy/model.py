"""Contact-policy models: what the API accepts and returns, with their rules.

A policy applies to a scope (``all``, ``category:<name>`` or
``campaign_group:<name>``), caps messages per contact per channel per rolling
window, may set quiet hours in the contact's local time, and says how long a
held-back send may wait before it expires.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, ValidationInfo, field_validator

from herald.contacts.model import ContactId, Name, Strict
from herald.policy.engine import parse_scope

MAX_CAPS = 10
MAX_WINDOW_HOURS = 720  # 30 days
MAX_EXPIRE_AFTER_HOURS = 720
DEFAULT_EXPIRE_AFTER_HOURS = 72

Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
LocalTime = Annotated[
    str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$"), Field(description='local time "HH:MM"')
]


def _scope(value: str) -> str:
    parse_scope(value)
    return value


Scope = Annotated[
    str,
    AfterValidator(_scope),
    Field(description="all, category:<name> or campaign_group:<name>"),
]


class CapChannel(StrEnum):
    """The channel a cap counts and holds: one outbound channel, or any of them."""

    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    ANY = "any"


class CapIn(Strict):
    """At most ``max_messages`` on ``channel`` per contact per rolling ``window_hours``."""

    channel: CapChannel
    max_messages: Annotated[int, Field(ge=1, le=1000)]
    window_hours: Annotated[int, Field(ge=1, le=MAX_WINDOW_HOURS)]


class QuietHoursIn(Strict):
    """No sends from ``start`` until ``end`` in the contact's local time (may wrap midnight)."""

    start: LocalTime
    end: LocalTime

    @field_validator("end")
    @classmethod
    def _differs(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("start") == value:
            raise ValueError("must differ from start")
        return value


Caps = Annotated[list[CapIn], Field(max_length=MAX_CAPS)]
ExpireAfter = Annotated[int, Field(ge=1, le=MAX_EXPIRE_AFTER_HOURS)]


class PolicyIn(Strict):
    """A new contact policy."""

    policy_id: ContactId | None = Field(default=None, description="a stable id of your choice (generated if absent)")
    name: Name
    description: Description | None = None
    scope: Scope = "all"
    caps: Caps = Field(default_factory=list)
    quiet_hours: QuietHoursIn | None = None
    expire_after_hours: ExpireAfter = DEFAULT_EXPIRE_AFTER_HOURS


class PolicyPatch(Strict):
    """Changes to a policy; ``quiet_hours: null`` and ``description: null`` remove them."""

    name: Name | None = None
    description: Description | None = None
    scope: Scope | None = None
    caps: Caps | None = None
    quiet_hours: QuietHoursIn | None = None
    expire_after_hours: ExpireAfter | None = None


class CapOut(BaseModel):
    channel: str
    max_messages: int
    window_hours: int


class QuietHoursOut(BaseModel):
    start: str
    end: str


class Policy(BaseModel):
    """A contact policy as Herald returns it."""

    policy_id: str
    name: str
    description: str | None = None
    scope: str
    caps: list[CapOut]
    quiet_hours: QuietHoursOut | None = None
    expire_after_hours: int
    created_at: str
    updated_at: str
    version: int
