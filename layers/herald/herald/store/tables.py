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
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection, LocalSecondaryIndex
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
