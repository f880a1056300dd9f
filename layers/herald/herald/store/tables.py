"""pynamodb models for Herald's tables.

Keys and indexes mirror ``template.yaml`` exactly (the template is the only
definition; tests create tables from it). Physical names are bound at cold
start by :func:`bind_tables`, never hard-coded.
"""

from __future__ import annotations

import os
from typing import Any

from pynamodb.attributes import (
    Attribute,
    BooleanAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    VersionAttribute,
)
from pynamodb.constants import MAP
from pynamodb.indexes import (
    AllProjection,
    GlobalSecondaryIndex,
    IncludeProjection,
    KeysOnlyProjection,
    LocalSecondaryIndex,
)
from pynamodb.models import Model

from herald.config import TableNames
from herald.dynamodb_json import from_attribute_value, to_attribute_value


class JSONMapAttribute(Attribute[dict[str, Any]]):
    """A free-form map stored as a DynamoDB map, read back as a plain dict.

    pynamodb's untyped ``MapAttribute`` builds an attribute object per key on
    every read and write; free attributes, consent and bounce state are plain
    JSON, so they are converted directly (numbers come back as int or float).
    """

    attr_type = MAP

    def serialize(self, value: dict[str, Any]) -> dict[str, Any]:
        return {key: to_attribute_value(item) for key, item in value.items()}

    def deserialize(self, value: dict[str, Any]) -> dict[str, Any]:
        return {key: from_attribute_value(item) for key, item in value.items()}


# Customers and leads are spread over this many index partitions per
# kind and status, so a bulk import never hammers one GSI partition key.
KIND_STATUS_SHARDS = 16


class KindStatusIndex(GlobalSecondaryIndex["ContactRecord"]):
    """Contacts by ``kind#status#shard`` (list filters, status targeting)."""

    class Meta:
        index_name = "KindStatusIndex"
        projection = AllProjection()

    kind_status_shard = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)


class BirthdayIndex(GlobalSecondaryIndex["ContactRecord"]):
    """Contacts by birthday ``MM-DD`` (date triggers), with what the trigger needs to decide."""

    class Meta:
        index_name = "BirthdayIndex"
        projection = IncludeProjection(["time_zone", "kind", "status"])

    birthday_md = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)


class SignupIndex(GlobalSecondaryIndex["ContactRecord"]):
    """Contacts by sign-up anniversary ``MM-DD`` (date triggers)."""

    class Meta:
        index_name = "SignupIndex"
        projection = IncludeProjection(["time_zone", "kind", "status"])

    signup_md = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)


class ContactRecord(Model):
    """A customer or a lead, as stored."""

    class Meta:
        table_name = "ContactsTable"

    contact_id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    status = UnicodeAttribute()
    email = UnicodeAttribute(null=True)
    phone = UnicodeAttribute(null=True)
    first_name = UnicodeAttribute(null=True)
    last_name = UnicodeAttribute(null=True)
    group_ids = UnicodeSetAttribute(null=True)
    attributes = JSONMapAttribute(null=True)
    consent = JSONMapAttribute(null=True)
    bounce = JSONMapAttribute(null=True)
    time_zone = UnicodeAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    version = VersionAttribute()
    kind_status_shard = UnicodeAttribute()
    birthday_md = UnicodeAttribute(null=True)
    signup_md = UnicodeAttribute(null=True)
    # Derived state the rules read straight from the item (see herald.rules).
    segment_ids = UnicodeSetAttribute(null=True)
    badge_ids = UnicodeSetAttribute(null=True)
    activity = JSONMapAttribute(null=True)
    campaigns_received = UnicodeSetAttribute(null=True)
    campaigns_opened = UnicodeSetAttribute(null=True)
    campaigns_clicked = UnicodeSetAttribute(null=True)

    kind_status_index = KindStatusIndex()
    birthday_index = BirthdayIndex()
    signup_index = SignupIndex()


class ContactKeyRecord(Model):
    """A unique natural key (``email:<kind>:<address>``) pointing at its contact."""

    class Meta:
        table_name = "ContactKeysTable"

    key = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute()


class CatalogRecord(Model):
    """Definitions people edit: customer groups now; segments, campaigns, flows later.

    ``entity_type`` partitions the catalog (``group``, ``group-name``,
    ``ref#group#<id>``, ...); ``entity_id`` is the id within it.
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute(null=True)
    description = UnicodeAttribute(null=True)
    state = UnicodeAttribute(null=True)
    member_count = NumberAttribute(null=True)
    ref_count = NumberAttribute(null=True)
    created_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute(null=True)
    target_id = UnicodeAttribute(null=True)
    version = VersionAttribute()


class GroupStatusIndex(GlobalSecondaryIndex["MembershipRecord"]):
    """Customer-group members by ``<group>#<status>`` (group-and-status targeting)."""

    class Meta:
        index_name = "GroupStatusIndex"
        projection = KeysOnlyProjection()

    group_status = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)


class ContactGroupsIndex(GlobalSecondaryIndex["MembershipRecord"]):
    """Every group-like membership of one contact."""

    class Meta:
        index_name = "ContactGroupsIndex"
        projection = AllProjection()

    contact_id = UnicodeAttribute(hash_key=True)
    group_key = UnicodeAttribute(range_key=True)


class MembershipRecord(Model):
    """A contact in a customer group (``cg#``), segment, audience or badge."""

    class Meta:
        table_name = "MembershipsTable"

    group_key = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    group_status = UnicodeAttribute(null=True)
    added_at = UnicodeAttribute(null=True)
    # How the contact got in: rule, manual or automation (and who/why, for audiences).
    source = UnicodeAttribute(null=True)
    actor = UnicodeAttribute(null=True)

    group_status_index = GroupStatusIndex()
    contact_groups_index = ContactGroupsIndex()


class GroupCounterRecord(Model):
    """The counter view of a catalog group item.

    Member counts change with every assignment; updating them through this
    unversioned model keeps them from bumping the version people edit with.
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    state = UnicodeAttribute(null=True)
    member_count = NumberAttribute(null=True)
    ref_count = NumberAttribute(null=True)


ALL_MODELS: list[tuple[str, type[Model]]] = [
    ("contacts", ContactRecord),
    ("contact_keys", ContactKeyRecord),
    ("catalog", CatalogRecord),
    ("catalog", GroupCounterRecord),
    ("memberships", MembershipRecord),
]


def bind_tables(names: TableNames, region: str | None = None) -> None:
    """Point every model at its physical table (called once at cold start).

    The endpoint is left to botocore, which honours ``AWS_ENDPOINT_URL``; that
    is how the embedded runtime and tests reach moto without a code branch.
    """
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    for field, model in ALL_MODELS:
        model.Meta.table_name = getattr(names, field)
        model.Meta.region = region
        model._connection = None  # drop any connection bound to an older name


class OccurredIndex(LocalSecondaryIndex["ActivityRecord"]):
    """A contact's events by when they happened."""

    class Meta:
        index_name = "OccurredIndex"
        projection = AllProjection()

    contact_id = UnicodeAttribute(hash_key=True)
    occurred_at = UnicodeAttribute(range_key=True)


class ActivityRecord(Model):
    """One recorded activity event of a contact (login, purchase, open, ...)."""

    class Meta:
        table_name = "ActivityTable"

    contact_id = UnicodeAttribute(hash_key=True)
    event_id = UnicodeAttribute(range_key=True)
    event_type = UnicodeAttribute()
    occurred_at = UnicodeAttribute()
    recorded_at = UnicodeAttribute()
    properties = JSONMapAttribute(null=True)
    expires_at = NumberAttribute(null=True)

    occurred_index = OccurredIndex()


ALL_MODELS.append(("activity", ActivityRecord))


class LiveIndex(GlobalSecondaryIndex["SegmentRecord"]):
    """Definitions that are live for a background job (``flexi`` segments and badges)."""

    class Meta:
        index_name = "LiveIndex"
        projection = AllProjection()

    live_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)


class SegmentRecord(Model):
    """A segment, audience or badge definition (``entity_type`` says which)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(null=True)
    rule = JSONMapAttribute(null=True)
    flexi = BooleanAttribute(default=False)
    online = BooleanAttribute(default=False)
    icon = UnicodeAttribute(null=True)
    channel = UnicodeAttribute(null=True)
    state = UnicodeAttribute()
    member_count = NumberAttribute(default=0)
    excluded = JSONMapAttribute(null=True)
    locked_by = UnicodeAttribute(null=True)
    duplicated_from = UnicodeAttribute(null=True)
    live_type = UnicodeAttribute(null=True)
    last_run_id = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    version = VersionAttribute()

    live_index = LiveIndex()


class AuditRecord(Model):
    """One manual change to an audience: who, when, why (``entity_type = audit#<key>``)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    action = UnicodeAttribute()
    contact_id = UnicodeAttribute()
    actor = UnicodeAttribute()
    reason = UnicodeAttribute(null=True)
    at = UnicodeAttribute()


class RunRecord(Model):
    """A recalculation run: its instant, targets and number of scan parts."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    reason = UnicodeAttribute()
    at = UnicodeAttribute()
    targets = JSONMapAttribute()
    parts = NumberAttribute()
    state = UnicodeAttribute()
    finished_at = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)


class RunPartRecord(Model):
    """One parallel-scan segment of a run: its checkpoint and counts."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    cursor = JSONMapAttribute(null=True)
    done = BooleanAttribute(default=False)
    scanned = NumberAttribute(default=0)
    changes = NumberAttribute(default=0)
    excluded = JSONMapAttribute(null=True)
    version = VersionAttribute()


ALL_MODELS += [
    ("catalog", SegmentRecord),
    ("catalog", AuditRecord),
    ("catalog", RunRecord),
    ("catalog", RunPartRecord),
]


# --------------------------------------------------------------------------
# Campaigns (issue 4)
# --------------------------------------------------------------------------


class CampaignLiveIndex(GlobalSecondaryIndex["CampaignRecord"]):
    """Launched, not stopped campaigns (``live_type = campaign``)."""

    class Meta:
        index_name = "LiveIndex"
        projection = AllProjection()

    live_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)


class CampaignRecord(Model):
    """A campaign definition (``entity_type = campaign``); ``spec`` is what people edit.

    ``live_type = campaign`` is set only while the campaign is launched and not
    stopped, so the tick finds its candidates on the sparse ``LiveIndex``.
    ``paused_by`` (``operator`` or ``guardrail``) and ``stopped_reason`` say why
    a stopped campaign stopped; ``guardrail_baseline`` is the current hour's
    guardrail counters at its last resume, so only newer evidence counts
    (:mod:`herald.campaigns.guardrails`).
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    spec = JSONMapAttribute()
    state = UnicodeAttribute()
    live_type = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    launched_at = UnicodeAttribute(null=True)
    stopped_at = UnicodeAttribute(null=True)
    launch = JSONMapAttribute(null=True)
    stopped_reason = UnicodeAttribute(null=True)
    paused_by = UnicodeAttribute(null=True)
    guardrail_baseline = JSONMapAttribute(null=True)
    version = VersionAttribute()

    live_index = CampaignLiveIndex()


class CampaignTestRecord(Model):
    """The unversioned view of a campaign item that records its last test.

    A test changes nothing people edit, so it must not bump the version the
    checklist compares against (a test counts only for the version it tested).
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    tested = JSONMapAttribute(null=True)


class ContactProgramsIndex(GlobalSecondaryIndex["EnrolmentRecord"]):
    """A contact's enrolments in campaigns and flows."""

    class Meta:
        index_name = "ContactProgramsIndex"
        projection = AllProjection()

    contact_id = UnicodeAttribute(hash_key=True)
    program_key = UnicodeAttribute(range_key=True)


class EnrolmentRecord(Model):
    """A contact in a campaign (``program_key = campaign#<id>``): the authority on who is in.

    ``occurrence`` names the treatment: ``1``, ``2`` ... for audience campaigns
    (a re-engagement is a new occurrence), ``birthday#2026`` or an event id for
    triggers. Deliveries are keyed by it, so each occurrence is sent once.
    """

    class Meta:
        table_name = "EnrolmentsTable"

    program_key = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)
    state = UnicodeAttribute()
    occurrence = UnicodeAttribute()
    occurrences = NumberAttribute(default=1)
    enrolled_at = UnicodeAttribute()
    exited_at = UnicodeAttribute(null=True)
    exit_reason = UnicodeAttribute(null=True)

    contact_programs_index = ContactProgramsIndex()


class RosterRecord(Model):
    """One bucket of a compact id set (``entity_type = roster#campaign#<id>`` or ``roster#treated``).

    The tick reads a campaign's active enrolments from a few hundred bucket
    items instead of one item per enrolled contact; the enrolment items stay
    the authority (their conditions decide), the roster is their index.
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    ids = UnicodeSetAttribute(null=True)


class OutboxRecord(Model):
    """Deliveries written in the same transaction as their enrolments, until they are queued."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    sends = UnicodeAttribute()
    created_at = UnicodeAttribute()


class FiredRecord(Model):
    """One event that fired a trigger campaign for a contact (``fired#campaign#<id>``, ``<contact>#<event>``).

    Written in the enrolment's transaction, so a replayed or reordered stream record
    meets its condition and fires nothing twice.
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    at = UnicodeAttribute()


class LeaseRecord(Model):
    """A short lease so overlapping ticks do not both work one campaign (correctness never depends on it)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    holder = UnicodeAttribute()
    until = NumberAttribute()


class AlertRecord(Model):
    """An alert raised on a campaign (``entity_type = alert#campaign#<id>``, SK time#kind)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()
    message = UnicodeAttribute()
    figures = JSONMapAttribute()
    at = UnicodeAttribute()


class AlertOutboxRecord(Model):
    """An alert written with its cause but not yet published (``entity_type = alert_outbox``, SK ``<at>#<campaign>``).

    Deleted once SNS accepted it; one left behind is published again by the next
    guardrail check or campaign tick, so a failed publish never loses the alert.
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    campaign_id = UnicodeAttribute()
    subject = UnicodeAttribute()
    message = UnicodeAttribute()


class StatsRecord(Model):
    """Counters of a subject (``campaign#<id>``) per metric row (``total``, ``day#YYYY-MM-DD``, ``hour#…THH``)."""

    class Meta:
        table_name = "StatsTable"

    subject = UnicodeAttribute(hash_key=True)
    metric = UnicodeAttribute(range_key=True)


ALL_MODELS += [
    ("catalog", CampaignRecord),
    ("catalog", CampaignTestRecord),
    ("enrolments", EnrolmentRecord),
    ("catalog", RosterRecord),
    ("catalog", OutboxRecord),
    ("catalog", LeaseRecord),
    ("catalog", FiredRecord),
    ("catalog", AlertRecord),
    ("catalog", AlertOutboxRecord),
    ("stats", StatsRecord),
]


# --------------------------------------------------------------------------
# Lead capture forms (issue 4)
# --------------------------------------------------------------------------


class FormRecord(Model):
    """A lead capture form (``entity_type = form``); ``spec`` holds its fields and consent wording."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(null=True)
    spec = JSONMapAttribute()
    honeypot_field = UnicodeAttribute()
    rate_limit_per_minute = NumberAttribute()
    published = BooleanAttribute(default=False)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    submissions = NumberAttribute(null=True)
    rejected_malformed = NumberAttribute(null=True)
    rejected_spam = NumberAttribute(null=True)
    rejected_rate_limited = NumberAttribute(null=True)
    version = VersionAttribute()


class FormCounterRecord(Model):
    """The unversioned counter view of a form item: counting never bumps the version."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    published = BooleanAttribute(null=True)
    submissions = NumberAttribute(null=True)
    rejected_malformed = NumberAttribute(null=True)
    rejected_spam = NumberAttribute(null=True)
    rejected_rate_limited = NumberAttribute(null=True)


class RateLimitRecord(Model):
    """Submissions from one source IP to one form in one minute (``ratelimit#form#<id>``, ``<ip>#<minute>``)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    hits = NumberAttribute(null=True)
    expires_at = NumberAttribute(null=True)


ALL_MODELS += [
    ("catalog", FormRecord),
    ("catalog", FormCounterRecord),
    ("catalog", RateLimitRecord),
]


# --------------------------------------------------------------------------
# Messages (issue 4: the sender)
# --------------------------------------------------------------------------


class MessageContactTimeIndex(GlobalSecondaryIndex["MessageRecord"]):
    """A contact's messages by when they took their state (contact-policy history)."""

    class Meta:
        index_name = "ContactTimeIndex"
        projection = AllProjection()

    contact_id = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class MessageProgramTimeIndex(GlobalSecondaryIndex["MessageRecord"]):
    """A campaign's (``program_key = campaign#<id>``) messages by time."""

    class Meta:
        index_name = "ProgramTimeIndex"
        projection = AllProjection()

    program_key = UnicodeAttribute(hash_key=True)
    created_at = UnicodeAttribute(range_key=True)


class MessageProviderIdIndex(GlobalSecondaryIndex["MessageRecord"]):
    """A message by the id its provider gave it (SES/SNS events find their message)."""

    class Meta:
        index_name = "ProviderIdIndex"
        projection = KeysOnlyProjection()

    provider_message_id = UnicodeAttribute(hash_key=True)


class MessageDueIndex(GlobalSecondaryIndex["MessageRecord"]):
    """Deferred messages by hour bucket (``due_hour``) and instant (``due_at``); sparse."""

    class Meta:
        index_name = "DueIndex"
        projection = AllProjection()

    due_hour = UnicodeAttribute(hash_key=True)
    due_at = UnicodeAttribute(range_key=True)


class MessageRecord(Model):
    """One action of one campaign occurrence for one contact; ``message_id`` is its idempotency key.

    ``status``: ``sending`` (claimed), ``sent``, ``deferred``, ``expired``,
    ``suppressed`` or ``failed``. ``created_at`` is when it took that state (a
    sent message: when it went out); ``due_hour``/``due_at`` exist only while
    it is deferred.
    """

    class Meta:
        table_name = "MessagesTable"

    message_id = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute()
    program_key = UnicodeAttribute()
    campaign_id = UnicodeAttribute()
    occurrence = UnicodeAttribute()
    action_index = NumberAttribute()
    channel = UnicodeAttribute()
    status = UnicodeAttribute()
    reason = UnicodeAttribute(null=True)
    policy_id = UnicodeAttribute(null=True)
    priority = NumberAttribute()
    queued_at = UnicodeAttribute()
    created_at = UnicodeAttribute()
    first_seen_at = UnicodeAttribute(null=True)
    sent_at = UnicodeAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    due_hour = UnicodeAttribute(null=True)
    deferrals = NumberAttribute(null=True)
    category = UnicodeAttribute(null=True)
    campaign_group = UnicodeAttribute(null=True)
    provider_message_id = UnicodeAttribute(null=True)
    claim = UnicodeAttribute(null=True)
    expires_at = NumberAttribute(null=True)
    # Set by SES event ingestion (herald.delivery.ingestion).
    delivered_at = UnicodeAttribute(null=True)
    # A flow step's send (herald.flows.sends): campaign_id is the flow's id, program_key ``flow#<flow_id>``.
    flow_version = NumberAttribute(null=True)
    step_id = UnicodeAttribute(null=True)

    contact_time_index = MessageContactTimeIndex()
    program_time_index = MessageProgramTimeIndex()
    provider_id_index = MessageProviderIdIndex()
    due_index = MessageDueIndex()


ALL_MODELS.append(("messages", MessageRecord))


class PolicyRecord(Model):
    """A contact policy (``entity_type = policy``): its scope, and in ``spec`` caps, quiet hours, expiry."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(null=True)
    scope = UnicodeAttribute()
    spec = JSONMapAttribute()
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    version = VersionAttribute()


ALL_MODELS.append(("catalog", PolicyRecord))


# --------------------------------------------------------------------------
# Suppressions and idempotency markers (issue 5: SES event ingestion)
# --------------------------------------------------------------------------


class SuppressionRecord(Model):
    """A contact must not get messages in ``scope`` (``<channel|all>#<all|campaign#id|category#c|group#g>``).

    D3: every suppression of a contact is one Query on ``contact_id``.
    """

    class Meta:
        table_name = "SuppressionsTable"

    contact_id = UnicodeAttribute(hash_key=True)
    scope = UnicodeAttribute(range_key=True)
    reason = UnicodeAttribute()
    at = UnicodeAttribute()
    source = UnicodeAttribute(null=True)


class IdempotencyRecord(Model):
    """A marker that one external event (``id``) was applied; DynamoDB TTL removes it at ``expiration``."""

    class Meta:
        table_name = "IdempotencyTable"

    id = UnicodeAttribute(hash_key=True)
    expiration = NumberAttribute()
    kind = UnicodeAttribute(null=True)


ALL_MODELS += [("suppressions", SuppressionRecord), ("idempotency", IdempotencyRecord)]


# --------------------------------------------------------------------------
# Campaign flows (issue 6; keys in herald.store.flows)
# --------------------------------------------------------------------------

FLOW_ENTITY = "flow"
LIVE_FLOW = "flow"


class FlowLiveIndex(GlobalSecondaryIndex["FlowRecord"]):
    """Active flows (``live_type = flow``) on the catalog's sparse LiveIndex."""

    class Meta:
        index_name = "LiveIndex"
        projection = AllProjection()

    live_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)


class FlowRecord(Model):
    """A flow (``entity_type = flow``); ``spec`` is its current version's settings and graph."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()
    status = UnicodeAttribute()
    current_version = NumberAttribute()
    spec = JSONMapAttribute()
    live_type = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    activated_at = UnicodeAttribute(null=True)
    stopped_at = UnicodeAttribute(null=True)
    # When the segments' members were last admitted as a whole (activation, resume, or the
    # tick once a future start has come); unset while that is still to do.
    members_admitted_at = UnicodeAttribute(null=True)
    # Where an unfinished admission of the segments' members stopped: {"segment": i, "after": contact}.
    admission_cursor = JSONMapAttribute(null=True)
    version = VersionAttribute()

    live_index = FlowLiveIndex()


class FlowVersionRecord(Model):
    """One version of a flow, immutable (``flowversion#<flow_id>`` / ``<n:06d>``)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    spec = JSONMapAttribute()
    created_at = UnicodeAttribute()


class FlowRunRecord(Model):
    """A contact's run in a flow (``flow#<flow_id>`` / contact): the authority on who is in.

    ``occurrence`` counts the contact's runs (``1``, ``2`` after a reset);
    ``cohort`` is the cohort it entered with.
    """

    class Meta:
        table_name = "EnrolmentsTable"

    program_key = UnicodeAttribute(hash_key=True)
    contact_id = UnicodeAttribute(range_key=True)
    state = UnicodeAttribute()
    occurrence = UnicodeAttribute()
    occurrences = NumberAttribute(default=1)
    enrolled_at = UnicodeAttribute()
    exited_at = UnicodeAttribute(null=True)
    exit_reason = UnicodeAttribute(null=True)
    cohort = UnicodeAttribute(null=True)
    flow_version = NumberAttribute(null=True)


class CohortMemberRecord(Model):
    """A contact walking with a cohort (``cohort#<cohort_id>`` / contact)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    occurrence = UnicodeAttribute()


class CohortRecord(Model):
    """A cohort's state (``flowcohort#<flow_id>`` / cohort id): ``filling``, ``running``, ``ended``."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    state = UnicodeAttribute()
    flow_version = NumberAttribute()
    root = UnicodeAttribute()
    created_at = UnicodeAttribute()
    started_at = UnicodeAttribute(null=True)
    ended_at = UnicodeAttribute(null=True)
    execution_arn = UnicodeAttribute(null=True)


class PendingCohortRecord(Model):
    """A filling cohort waiting for its window to close (``flowcohort#pending`` / ``<window end>#<cohort>``)."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    flow_id = UnicodeAttribute()
    cohort_id = UnicodeAttribute()
    flow_version = NumberAttribute()
    starting = UnicodeAttribute(null=True)


class StepLogRecord(Model):
    """What a step did for one page of a cohort (``flowlog#<flow_id>`` / ``<cohort>#<seq>#<page>``).

    ``outcomes`` maps each contact to ``[outcome, reason, message_id]``.
    """

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    step_id = UnicodeAttribute()
    step_type = UnicodeAttribute()
    at = UnicodeAttribute()
    occurrence_of = JSONMapAttribute()
    outcomes = JSONMapAttribute()


class ResetDueRecord(Model):
    """A finished run whose reset period ends (``flowreset#due`` / ``<due ISO>#<flow>#<contact>``):
    the tick lets the contact enter again then, if still in the flow's segments."""

    class Meta:
        table_name = "CatalogTable"

    entity_type = UnicodeAttribute(hash_key=True)
    entity_id = UnicodeAttribute(range_key=True)
    flow_id = UnicodeAttribute()
    contact_id = UnicodeAttribute()


ALL_MODELS += [
    ("catalog", ResetDueRecord),
    ("catalog", FlowRecord),
    ("catalog", FlowVersionRecord),
    ("catalog", CohortMemberRecord),
    ("catalog", CohortRecord),
    ("catalog", PendingCohortRecord),
    ("catalog", StepLogRecord),
    ("enrolments", FlowRunRecord),
]
