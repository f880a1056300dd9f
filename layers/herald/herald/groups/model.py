"""Customer-group domain models."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, StringConstraints

from herald.contacts.model import GroupId, Strict

GroupName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]


class GroupState(StrEnum):
    """A group is Ready, or Deleting while a forced deletion unassigns its members."""

    READY = "Ready"
    DELETING = "Deleting"


class GroupIn(Strict):
    """A new customer group."""

    group_id: GroupId | None = None
    name: GroupName
    description: Description | None = None


class GroupPatch(Strict):
    """Rename a group or change its description."""

    name: GroupName | None = None
    description: Description | None = None


class Group(BaseModel):
    """A customer group as Herald returns it."""

    group_id: str
    name: str
    description: str | None = None
    state: GroupState = GroupState.READY
    member_count: int = 0
    ref_count: int = 0
    created_at: str
    updated_at: str
    version: int
