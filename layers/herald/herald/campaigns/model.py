"""Campaign models: what the API accepts and returns, with their rules.

A campaign reaches **customers** (by customer group and status, exactly as the
targeting table of seed 000, or by segments, an audience or badges) or
**leads** (by segments and lead forms). Its kind sets its default priority
(seed 003); its actions are what each enrolled contact receives.
"""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from herald.activity.model import EVENT_TYPE
from herald.contacts.model import ContactId, GroupId, Name, Strict, TimeZone
from herald.delivery import webhook
from herald.delivery.render import template_problem
from herald.policy.engine import default_priority

MAX_TARGETS = 20
RECEIVED = "campaign.received"
MAX_ACTIONS = 10
MAX_SUBSCRIBERS = 20
MAX_GUARDRAIL_WINDOW_HOURS = 168

Description = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")]
LocalTime = Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class AudienceType(StrEnum):
    """Whom the campaign reaches (seed 000's "Audience Type")."""

    CUSTOMERS = "customers"
    LEADS = "leads"

    @property
    def contact_kind(self) -> str:
        return "customer" if self is AudienceType.CUSTOMERS else "lead"


class SendTo(StrEnum):
    """Which customers of the selected group are included; seed 000 defines only All."""

    ALL = "All"


class StatusFilter(StrEnum):
    """Customer status filter: Active, Inactive or All (status ignored)."""

    ALL = "All"
    ACTIVE = "Active"
    INACTIVE = "Inactive"


class CampaignKind(StrEnum):
    """Seed 003's three kinds: ad-hoc, trigger (behaviour or date), lifecycle."""

    AD_HOC = "ad_hoc"
    TRIGGER = "trigger"
    LIFECYCLE = "lifecycle"


class State(StrEnum):
    """Draft until launched; Launched runs continuously until Stopped; resume relaunches."""

    DRAFT = "Draft"
    LAUNCHED = "Launched"
    STOPPED = "Stopped"


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat an id")
    return values


TargetIds = Annotated[list[ContactId], Field(max_length=MAX_TARGETS), AfterValidator(_unique)]


class Targeting(Strict):
    """Who the campaign reaches. Group-and-status fields, or definitions, never both."""

    group_id: GroupId | None = Field(default=None, description="Customer group; blank = all customers")
    send_to: SendTo = SendTo.ALL
    status: StatusFilter = StatusFilter.ALL
    segment_ids: TargetIds = []
    audience_id: ContactId | None = None
    badge_ids: TargetIds = []
    form_ids: TargetIds = []

    @property
    def by_definitions(self) -> bool:
        """True when segments, an audience, badges or forms select the contacts."""
        return bool(self.segment_ids or self.audience_id or self.badge_ids or self.form_ids)

    @model_validator(mode="after")
    def _one_mode(self) -> Targeting:
        if self.by_definitions and (self.group_id or self.status is not StatusFilter.ALL):
            raise ValueError(
                "group_id and status select customers by group; they cannot be combined with "
                "segment_ids, audience_id, badge_ids or form_ids"
            )
        if self.audience_id and (self.segment_ids or self.badge_ids or self.form_ids):
            raise ValueError("an audience is a complete target; do not combine audience_id with other definitions")
        return self


class Trigger(Strict):
    """What fires a trigger campaign: a contact event, or a date in the contact's time zone."""

    event: Annotated[str, StringConstraints(pattern=EVENT_TYPE)] | None = Field(
        default=None, description="Activity event type, e.g. login, purchase, returned_item, campaign.opened"
    )
    date: Literal["birthday", "signup_anniversary"] | None = None
    send_at: LocalTime = Field(default="09:00", description="Local time a date trigger fires (contact's zone)")

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        if (self.event is None) == (self.date is None):
            raise ValueError("set exactly one of event or date")
        if self.event == RECEIVED:
            # Every send records campaign.received: such a trigger would fire on its own sends.
            raise ValueError("event: campaign.received follows every send; trigger on campaign.opened or clicked")
        return self

    @property
    def type(self) -> str:
        return "event" if self.event else "date"


def _template(value: str) -> str:
    problem = template_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Template = Annotated[str, StringConstraints(min_length=1, max_length=100_000), AfterValidator(_template)]


class EmailAction(Strict):
    type: Literal["email"]
    subject: Annotated[Template, StringConstraints(max_length=500)]
    body: Template
    track_engagement: bool = Field(default=True, description="Record opens and clicks (engagement tracking)")


class SmsAction(Strict):
    type: Literal["sms"]
    text: Annotated[Template, StringConstraints(max_length=1600)]


class PushAction(Strict):
    type: Literal["push"]
    title: Annotated[Template, StringConstraints(max_length=200)]
    body: Annotated[Template, StringConstraints(max_length=2000)]


class PointsAction(Strict):
    type: Literal["points"]
    points: Annotated[int, Field(ge=-1_000_000, le=1_000_000)]

    @field_validator("points")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class StageAction(Strict):
    type: Literal["stage"]
    stage: Label


def _webhook_url(value: str) -> str:
    problem = webhook.url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _webhook_body(value: str) -> str:
    problem = webhook.body_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class WebhookAction(Strict):
    """A signed JSON POST to the operator's system (no consent or contact policy: it is not sent to the contact)."""

    type: Literal["webhook"]
    url: Annotated[
        str, StringConstraints(min_length=1, max_length=webhook.MAX_URL_LENGTH), AfterValidator(_webhook_url)
    ] = Field(description="https:// URL of a public host (not a template)")
    body: Annotated[Template, AfterValidator(_webhook_body)] | None = Field(
        default=None,
        description="Jinja template rendering a JSON document (quote values with | tojson); "
        "blank = campaign id and name, contact id and email, message id",
    )


Action = Annotated[
    EmailAction | SmsAction | PushAction | PointsAction | StageAction | WebhookAction, Field(discriminator="type")
]
CHANNEL_ACTIONS = frozenset({"email", "sms", "push"})


def _local_moment(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be a local date and time such as 2026-12-01T09:00") from exc
    if parsed.tzinfo is not None:
        raise ValueError("must not carry an offset; the campaign's time_zone gives it")
    return parsed.isoformat(timespec="minutes")


LocalMoment = Annotated[str, AfterValidator(_local_moment)]


class UnsubscribeScope(StrEnum):
    """What an unsubscribe link of the campaign's emails stops (seed 004's "detail")."""

    CAMPAIGN = "campaign"
    CATEGORY = "category"
    GROUP = "group"
    CATEGORY_AND_GROUP = "category_and_group"
    ALL = "all"


class UnsubscribeChannels(StrEnum):
    """Whether the unsubscribe covers only the message's channel or every outbound channel."""

    THIS = "this"
    ALL = "all"


class UnsubscribeSettings(Strict):
    """The campaign's unsubscribe link: its scope and its channels (seed 004)."""

    scope: UnsubscribeScope = Field(
        default=UnsubscribeScope.ALL, description="campaign, category, group, category_and_group or all marketing"
    )
    channels: UnsubscribeChannels = Field(
        default=UnsubscribeChannels.THIS, description="this: the message's channel only; all: every outbound channel"
    )


_PCT = Annotated[float, Field(ge=0, le=100)]


class Guardrails(Strict):
    """The campaign's sending guardrails (issue 5): pause it when too many emails bounce hard or draw complaints.

    Over the last ``window_hours`` hours (the current hour included), once at
    least ``min_sent`` messages were sent, a hard-bounce rate or complaint rate
    strictly above its threshold pauses the campaign and raises an alert
    (:mod:`herald.campaigns.guardrails`).
    """

    hard_bounce_pct: _PCT = Field(default=5.0, description="Hard bounces ÷ sent, in %, above which it pauses")
    complaint_pct: _PCT = Field(default=0.1, description="Complaints ÷ sent, in %, above which it pauses")
    min_sent: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=200, description="Messages sent in the window before the rates count"
    )
    window_hours: Annotated[int, Field(ge=1, le=MAX_GUARDRAIL_WINDOW_HOURS)] = Field(
        default=24, description="The sliding window, in hours (1 to 168)"
    )
    enabled: bool = True


class CampaignFields(Strict):
    """Everything a campaign's owner may set (create takes all, PATCH any subset)."""

    name: Name
    description: Description
    audience_type: AudienceType = AudienceType.CUSTOMERS
    targeting: Targeting = Targeting()
    kind: CampaignKind = CampaignKind.AD_HOC
    trigger: Trigger | None = None
    priority: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None, description="Overrides the kind's priority (lower goes first)"
    )
    category: Label | None = None
    campaign_group: Label | None = None
    published: bool = False
    start: LocalMoment | None = Field(default=None, description="Local start (time_zone); blank = at launch")
    end: LocalMoment | None = Field(default=None, description="Local end, exclusive; blank = until stopped")
    time_zone: TimeZone = "UTC"
    actions: Annotated[list[Action], Field(max_length=MAX_ACTIONS)] = []
    include_previously_treated: bool = False
    expected_in_campaign_pct: _PCT = 90.0
    alert_subscribers: Annotated[list[EmailStr], Field(max_length=MAX_SUBSCRIBERS)] = []
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()
    guardrails: Guardrails = Guardrails()

    @model_validator(mode="after")
    def _consistent(self) -> CampaignFields:
        check_consistency(self)
        return self


def check_consistency(fields: CampaignFields) -> None:
    """Rules across fields, raised as ``ValueError`` naming the field first."""
    targeting = fields.targeting
    if fields.audience_type is AudienceType.LEADS:
        if targeting.group_id or targeting.status is not StatusFilter.ALL:
            raise ValueError("targeting: leads have no customer group or status; target segment_ids or form_ids")
        if targeting.audience_id or targeting.badge_ids:
            raise ValueError("targeting: lead campaigns target segment_ids and form_ids")
        if not (targeting.segment_ids or targeting.form_ids):
            raise ValueError("targeting: a lead campaign needs at least one of segment_ids or form_ids")
    elif targeting.form_ids:
        raise ValueError("targeting.form_ids: forms capture leads; customer campaigns cannot target them")
    if (fields.kind is CampaignKind.TRIGGER) != (fields.trigger is not None):
        raise ValueError("trigger: required for kind trigger, and only for it")
    if fields.start and fields.end and fields.start >= fields.end:
        raise ValueError("end: must be after start")
    scope = fields.unsubscribe.scope
    if scope in (UnsubscribeScope.CATEGORY, UnsubscribeScope.CATEGORY_AND_GROUP) and not fields.category:
        raise ValueError(f"category: required when unsubscribe.scope is {scope.value}")
    if scope in (UnsubscribeScope.GROUP, UnsubscribeScope.CATEGORY_AND_GROUP) and not fields.campaign_group:
        raise ValueError(f"campaign_group: required when unsubscribe.scope is {scope.value}")


class CampaignIn(CampaignFields):
    """Create a campaign; ``id`` is optional (a stable client id)."""

    id: ContactId | None = None


class CampaignPatch(Strict):
    """Change some fields; the merged campaign is validated as a whole."""

    model_config = {**Strict.model_config}

    name: Name | None = None
    description: Description | None = None
    audience_type: AudienceType | None = None
    targeting: Targeting | None = None
    kind: CampaignKind | None = None
    trigger: Trigger | None = None
    priority: Annotated[int, Field(ge=1, le=100)] | None = None
    category: Label | None = None
    campaign_group: Label | None = None
    published: bool | None = None
    start: LocalMoment | None = None
    end: LocalMoment | None = None
    time_zone: TimeZone | None = None
    actions: Annotated[list[Action], Field(max_length=MAX_ACTIONS)] | None = None
    include_previously_treated: bool | None = None
    expected_in_campaign_pct: _PCT | None = None
    alert_subscribers: Annotated[list[EmailStr], Field(max_length=MAX_SUBSCRIBERS)] | None = None
    unsubscribe: UnsubscribeSettings | None = None
    guardrails: Guardrails | None = Field(default=None, description="Replaces the whole object (omitted = default)")


class LaunchIn(Strict):
    """Launch (or resume); ``force`` with a ``reason`` overrides a failing checklist."""

    force: bool = False
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)] | None = None

    @model_validator(mode="after")
    def _reason_with_force(self) -> LaunchIn:
        if self.force and not self.reason:
            raise ValueError("reason: required when force is true")
        return self


class TestIn(Strict):
    """Test the campaign on a sample contact."""

    contact_id: ContactId


class Campaign(BaseModel):
    """A campaign as the API returns it."""

    id: str
    name: str
    description: str
    audience_type: AudienceType
    targeting: Targeting
    kind: CampaignKind
    trigger: Trigger | None
    priority: int | None
    effective_priority: int
    category: str | None
    campaign_group: str | None
    published: bool
    start: str | None
    end: str | None
    time_zone: str
    actions: list[dict[str, Any]]
    include_previously_treated: bool
    expected_in_campaign_pct: float
    alert_subscribers: list[str]
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()
    guardrails: Guardrails = Guardrails()
    state: State
    launched_at: str | None
    stopped_at: str | None
    stopped_reason: str | None = None
    paused_by: str | None = None
    launch: dict[str, Any] | None
    created_at: str
    updated_at: str
    version: int
    stats: dict[str, Any] | None = None


def effective_priority(fields: CampaignFields | dict[str, Any]) -> int:
    """The campaign's priority: its override, else its kind's default (seed 003)."""
    spec = fields if isinstance(fields, dict) else fields.model_dump(mode="json")
    if spec.get("priority"):
        return int(spec["priority"])
    trigger = spec.get("trigger") or {}
    trigger_type = ("event" if trigger.get("event") else "date") if trigger else None
    return default_priority(spec["kind"], trigger_type)


def local_moment(value: str | None, zone: str) -> datetime | None:
    """A campaign's local start or end as an aware datetime."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=ZoneInfo(zone))


def parse_local_time(value: str) -> time:
    hours, minutes = (int(part) for part in value.split(":"))
    return time(hours, minutes)
