"""A campaign flow's settings and what the API accepts and returns (seed 004, issue 6).

A flow targets one or more segments (never everyone), runs between its start
and end dates in its time zone, and has a category and group for priority and
contact policy like a campaign. Its steps are a :class:`FlowGraph`.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from herald.activity.model import EVENT_TYPE
from herald.campaigns.model import Description, Label, LocalMoment, UnsubscribeScope, UnsubscribeSettings
from herald.contacts.model import ContactId, GroupId, Name, Strict, TimeZone
from herald.flows.definition import FlowGraph
from herald.policy.engine import default_priority

MAX_SEGMENTS = 20
DEFAULT_TIME_ZONE_VARIABLE = "HERALD_DEFAULT_TIME_ZONE"
# Flows run continuously for contacts who qualify, like lifecycle campaigns (seed 003's priorities).
FLOW_KIND = "lifecycle"


def default_time_zone() -> str:
    """The platform's time zone (the template's ``DefaultTimeZone`` parameter), used when a flow names none."""
    return os.environ.get(DEFAULT_TIME_ZONE_VARIABLE) or "UTC"


class FlowStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"


class ResetInteractions(StrEnum):
    """Which finished runs the reset period lets enter again (seed 004)."""

    ALL = "all"
    CONVERSIONS = "conversions"
    DISMISSES = "dismisses"


class ResetPeriod(Strict):
    """After ``amount`` ``unit`` since a run ended, its contact may enter the flow again."""

    amount: Annotated[int, Field(ge=1, le=3650)]
    unit: Literal["days", "weeks", "months"]
    interactions: ResetInteractions = ResetInteractions.ALL

    def days(self) -> int:
        return self.amount * {"days": 1, "weeks": 7, "months": 30}[self.unit]


SegmentIds = Annotated[list[GroupId], Field(max_length=MAX_SEGMENTS)]
EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE)]


class FlowSettings(Strict):
    """Everything about a flow except its steps."""

    name: Name
    description: Description | None = None
    segments: SegmentIds = Field(description="The segments whose members enter (one or more; never everyone)")
    start: LocalMoment | None = Field(default=None, description="Local start (time_zone); blank = at activation")
    end: LocalMoment | None = Field(default=None, description="Local end, exclusive; blank = until stopped")
    time_zone: TimeZone | None = Field(default=None, description="Blank = the platform's default time zone")
    category: Label | None = None
    campaign_group: Label | None = None
    priority: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None, description="Overrides the lifecycle priority (lower goes first)"
    )
    show_after_conversion: bool = Field(
        default=True, description="Keep converted contacts in the flow; when false they leave at their next step"
    )
    conversion_event: EventType | None = Field(
        default=None, description="The activity event type that counts as a conversion"
    )
    reset: ResetPeriod | None = Field(default=None, description="When contacts who finished may enter again")
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()

    @model_validator(mode="after")
    def _consistent(self) -> FlowSettings:
        check_settings(self)
        return self


def check_settings(settings: FlowSettings) -> None:
    """Cross-field rules, each naming its field."""
    if not settings.segments:
        raise ValueError("segments: a flow needs one or more segments; targeting everyone is refused")
    if len(set(settings.segments)) != len(settings.segments):
        raise ValueError("segments: a segment is listed twice")
    if not settings.show_after_conversion and not settings.conversion_event:
        raise ValueError("conversion_event: required when show_after_conversion is false")
    resets_conversions = settings.reset is not None and settings.reset.interactions == ResetInteractions.CONVERSIONS
    if resets_conversions and not settings.conversion_event:
        raise ValueError("conversion_event: required when reset.interactions is conversions")
    if settings.start and settings.end and settings.end <= settings.start:
        raise ValueError("end: must be after start")
    scope = settings.unsubscribe.scope
    if scope in (UnsubscribeScope.CATEGORY, UnsubscribeScope.CATEGORY_AND_GROUP) and not settings.category:
        raise ValueError(f"category: required when unsubscribe.scope is {scope.value}")
    if scope in (UnsubscribeScope.GROUP, UnsubscribeScope.CATEGORY_AND_GROUP) and not settings.campaign_group:
        raise ValueError(f"campaign_group: required when unsubscribe.scope is {scope.value}")


class FlowIn(FlowSettings):
    """A new flow: its settings and its steps."""

    graph: FlowGraph


class FlowPatch(Strict):
    """Any subset of a flow's settings and steps; every saved change is a new version."""

    name: Name | None = None
    description: Description | None = None
    segments: SegmentIds | None = None
    start: LocalMoment | None = None
    end: LocalMoment | None = None
    time_zone: TimeZone | None = None
    category: Label | None = None
    campaign_group: Label | None = None
    priority: Annotated[int, Field(ge=1, le=100)] | None = None
    show_after_conversion: bool | None = None
    conversion_event: EventType | None = None
    reset: ResetPeriod | None = None
    unsubscribe: UnsubscribeSettings | None = None
    graph: FlowGraph | None = None


class PreviewIn(Strict):
    """Preview a step for one contact."""

    contact_id: ContactId


class Flow(BaseModel):
    """A flow as the API returns it: its current version's settings and steps, and its state."""

    id: str
    status: FlowStatus
    version: int = Field(description="The current version: new entrants start on it")
    settings: dict[str, Any]
    graph: dict[str, Any]
    created_at: str
    updated_at: str
    activated_at: str | None = None
    stopped_at: str | None = None
    etag_version: int = Field(exclude=True, default=0)


def effective_priority(settings: FlowSettings | dict[str, Any]) -> int:
    """The flow's priority: its override, else the lifecycle default."""
    spec = settings if isinstance(settings, dict) else settings.model_dump(mode="json")
    return int(spec.get("priority") or default_priority(FLOW_KIND))
