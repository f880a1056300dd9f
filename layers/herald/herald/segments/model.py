"""Segments, audiences and badges: the three customer-group types of seed 002.

- A **segment** is persistent. Standard: filled once at creation. Flexi: its
  rule re-runs every night, adding and expelling members. Automation may add
  or remove members; on a flexi segment the next nightly run overrides that.
- An **audience** is selected once at creation and then locked: its rule never
  re-runs; people add or remove contacts by hand (audited) or duplicate it.
  Once a launched campaign targets it, it is completely locked.
- A **badge** is a segment with an icon shown on the contact's record; flexi
  (rule, nightly) or assigned by hand.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from herald.contacts.model import Channel, ContactId, Name, Strict

MAX_MANUAL_CHANGES = 100


class GroupType(StrEnum):
    """Which of the three customer-group types a definition is."""

    SEGMENT = "segment"
    AUDIENCE = "audience"
    BADGE = "badge"

    @property
    def prefix(self) -> str:
        """Its partition prefix in the memberships table."""
        return {"segment": "seg#", "audience": "aud#", "badge": "bdg#"}[self.value]

    @property
    def plural(self) -> str:
        return self.value + "s"


class State(StrEnum):
    """Filling (first selection running), Ready, Locked (a launched campaign targets it)."""

    FILLING = "Filling"
    READY = "Ready"
    LOCKED = "Locked"


Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]
_ICON = re.compile(r"^(https://\S+|data:image/(png|svg\+xml);base64,[A-Za-z0-9+/=]+)$")
MAX_ICON_LENGTH = 60_000  # a small square icon; larger images belong on a CDN


def _icon(value: str) -> str:
    if len(value) > MAX_ICON_LENGTH or not _ICON.match(value):
        raise ValueError(
            "must be an https URL or a data:image/png or data:image/svg+xml base64 URI (at most 60,000 characters)"
        )
    return value


Icon = Annotated[str, AfterValidator(_icon)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class DefinitionIn(Strict):
    """A new segment, audience or badge (which fields apply depends on the type)."""

    id: ContactId | None = Field(default=None, description="a stable id of your choice (generated when absent)")
    name: Name
    description: Description | None = None
    rule: dict[str, Any] | None = Field(default=None, description="the rule (see the rule language)")
    flexi: bool = Field(default=False, description="segments and badges: recalculate every night")
    online: bool = Field(default=False, description="segments: allow online recalculation for one contact")
    icon: Icon | None = Field(default=None, description="badges: an https URL or a data:image URI")
    channel: Channel = Field(default=Channel.EMAIL, description="audiences: the channel consent is checked for")


class DefinitionPatch(Strict):
    """Changes to a definition; an audience's rule can never change."""

    name: Name | None = None
    description: Description | None = None
    rule: dict[str, Any] | None = None
    flexi: bool | None = None
    online: bool | None = None
    icon: Icon | None = None


class Definition(BaseModel):
    """A segment, audience or badge as Herald returns it."""

    id: str
    type: GroupType
    name: str
    description: str | None = None
    rule: dict[str, Any] | None = None
    flexi: bool = False
    online: bool = False
    icon: str | None = None
    channel: str | None = None
    state: State
    member_count: int = 0
    excluded: dict[str, int] | None = None
    locked_by: str | None = None
    duplicated_from: str | None = None
    created_at: str
    updated_at: str
    version: int
    warnings: list[str] = Field(default_factory=list)


class ManualChange(Strict):
    """Add or remove contacts by hand (audiences, hand-assigned badges) or by automation (segments)."""

    contact_ids: Annotated[list[ContactId], Field(min_length=1, max_length=MAX_MANUAL_CHANGES)]
    actor: Actor = Field(description="who makes the change (a person or an automation)")
    reason: Reason | None = Field(default=None, description="why; required for audiences")


class DuplicateIn(Strict):
    """The name of the copy."""

    name: Name


class PreviewIn(Strict):
    """An unsaved rule to size up."""

    rule: dict[str, Any]
    sample: Annotated[int, Field(ge=0, le=50)] = 10
    kind: str | None = None


class ExplainIn(Strict):
    """Which contact to explain the rule for."""

    contact_id: ContactId
