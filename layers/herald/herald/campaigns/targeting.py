"""Who a campaign's targeting selects, read with queries on keys and indexes.

Seed 000's table, exactly:

| Customer Group | Send To | Status   | read                                                       |
|----------------|---------|----------|------------------------------------------------------------|
| blank          | All     | All      | ``KindStatusIndex`` customer#Active#nn + customer#Inactive#nn |
| a group        | All     | All      | memberships ``group_key = cg#<group>``                      |
| blank          | All     | Active / Inactive | ``KindStatusIndex`` customer#<status>#nn (16 shards) |
| a group        | All     | Active / Inactive | ``GroupStatusIndex`` ``<group>#<status>``           |

Segments, an audience, badges and forms read their membership partitions
(the union of them), keeping only contacts of the campaign's audience type.
Every read returns keys only, so items read ÷ contacts targeted stays 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from herald.campaigns.model import AudienceType, StatusFilter, Targeting
from herald.store.contacts import KIND_STATUS_SHARDS, kind_status_partition
from herald.store.contacts import group_key as customer_group_key
from herald.store.tables import ContactRecord, MembershipRecord
from herald.store.transactions import default_connection

STATUSES = ("Active", "Inactive")


@dataclass
class ReadCount:
    """Items and requests a targeting read cost (for statistics and benchmarks)."""

    items: int = 0
    requests: int = 0


def matching_ids(audience: AudienceType, targeting: Targeting, count: ReadCount | None = None) -> set[str]:
    """The ids of every contact the targeting selects now."""
    count = count if count is not None else ReadCount()
    ids: set[str] = set()
    for source in _sources(audience, targeting):
        ids.update(source(count))
    return ids


def _sources(audience: AudienceType, targeting: Targeting) -> list[Any]:
    kind = audience.contact_kind
    if targeting.by_definitions:
        keys = [f"seg#{i}" for i in targeting.segment_ids]
        keys += [f"bdg#{i}" for i in targeting.badge_ids]
        keys += [f"form#{i}" for i in targeting.form_ids]
        if targeting.audience_id:
            keys.append(f"aud#{targeting.audience_id}")
        return [_partition(MembershipRecord.Meta.table_name, None, "group_key", key, kind) for key in keys]
    if targeting.group_id:
        if targeting.status is StatusFilter.ALL:
            key = customer_group_key(targeting.group_id)
            return [_partition(MembershipRecord.Meta.table_name, None, "group_key", key, None)]
        value = f"{targeting.group_id}#{targeting.status.value}"
        return [_partition(MembershipRecord.Meta.table_name, "GroupStatusIndex", "group_status", value, None)]
    statuses = STATUSES if targeting.status is StatusFilter.ALL else (targeting.status.value,)
    return [
        _partition(
            ContactRecord.Meta.table_name,
            "KindStatusIndex",
            "kind_status_shard",
            kind_status_partition("customer", status, shard),
            None,
        )
        for status in statuses
        for shard in range(KIND_STATUS_SHARDS)
    ]


def _partition(table: str, index: str | None, key_name: str, key_value: str, kind: str | None) -> Any:
    def read(count: ReadCount) -> Iterator[str]:
        query: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key_name, "#c": "contact_id"},
            "ExpressionAttributeValues": {":v": {"S": key_value}},
            "ProjectionExpression": "#c",
        }
        if index:
            query["IndexName"] = index
        else:
            query["ConsistentRead"] = True
        if kind:
            query["ProjectionExpression"] = "#c, kind"
        client: Any = default_connection().client
        while True:
            page = client.query(**query)
            count.requests += 1
            count.items += len(page.get("Items", []))
            for item in page.get("Items", []):
                if kind is None or (item.get("kind") or {}).get("S", kind) == kind:
                    yield item["contact_id"]["S"]
            if "LastEvaluatedKey" not in page:
                return
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    return read


def explain_contact(
    audience: AudienceType, targeting: Targeting, contact: dict[str, Any], memberships: set[str]
) -> dict[str, Any]:
    """Rule by rule, whether one contact (a decoded item) is targeted, and why.

    ``memberships`` holds the contact's membership keys (``aud#x``, ``form#y``...).
    """
    checks: list[dict[str, Any]] = []
    kind = audience.contact_kind
    checks.append(_check("audience_type", contact.get("kind") == kind, f"contact is a {contact.get('kind')}"))
    if targeting.by_definitions:
        definitions = []
        for prefix, ids, held in (
            ("segment", targeting.segment_ids, set(contact.get("segment_ids") or ())),
            ("badge", targeting.badge_ids, set(contact.get("badge_ids") or ())),
            ("form", targeting.form_ids, {k[5:] for k in memberships if k.startswith("form#")}),
            (
                "audience",
                [targeting.audience_id] if targeting.audience_id else [],
                {k[4:] for k in memberships if k.startswith("aud#")},
            ),
        ):
            for definition_id in ids:
                definitions.append({"type": prefix, "id": definition_id, "member": definition_id in held})
        any_member = any(d["member"] for d in definitions)
        checks.append({"rule": "member of any selected definition", "matches": any_member, "definitions": definitions})
    else:
        groups = set(contact.get("group_ids") or ())
        if targeting.group_id:
            in_group = targeting.group_id in groups
            checks.append(_check(f"customer group = {targeting.group_id}", in_group, f"groups: {sorted(groups)}"))
        else:
            checks.append(_check("customer group blank (all customers)", True, "every customer"))
        checks.append(_check("send to = All", True, "every customer of the selection"))
        status_ok = targeting.status is StatusFilter.ALL or contact.get("status") == targeting.status.value
        checks.append(_check(f"status = {targeting.status.value}", status_ok, f"contact is {contact.get('status')}"))
    return {"matches": all(c["matches"] for c in checks), "checks": checks}


def _check(rule: str, matches: bool, detail: str) -> dict[str, Any]:
    return {"rule": rule, "matches": matches, "detail": detail}


def contact_view(record: ContactRecord) -> dict[str, Any]:
    """The fields targeting reads from a contact record."""
    return {
        "contact_id": record.contact_id,
        "kind": record.kind,
        "status": record.status,
        "group_ids": set(record.group_ids or ()),
        "segment_ids": set(record.segment_ids or ()),
        "badge_ids": set(record.badge_ids or ()),
    }


def membership_keys_needed(targeting: Targeting) -> list[str]:
    """Membership partitions a per-contact check must look up (audience and forms)."""
    keys = [f"form#{i}" for i in targeting.form_ids]
    if targeting.audience_id:
        keys.append(f"aud#{targeting.audience_id}")
    return keys


def targeted_among(audience: AudienceType, targeting: Targeting, records: list[ContactRecord]) -> set[str]:
    """Which of these contacts the targeting selects (per-contact checks, for triggers)."""
    keys = membership_keys_needed(targeting)
    held: dict[str, set[str]] = {r.contact_id: set() for r in records}
    if keys and records:
        pairs = [(key, r.contact_id) for key in keys for r in records]
        for membership in MembershipRecord.batch_get(pairs):
            held[membership.contact_id].add(membership.group_key)
    return {
        r.contact_id
        for r in records
        if explain_contact(audience, targeting, contact_view(r), held[r.contact_id])["matches"]
    }


def spec_targets(spec: dict[str, Any], records: list[ContactRecord]) -> set[str]:
    """Which of these contacts a campaign's stored targeting selects now (flows reusing its message)."""
    audience = AudienceType(spec.get("audience_type") or AudienceType.CUSTOMERS.value)
    targeting = Targeting.model_validate(spec.get("targeting") or {})
    return targeted_among(audience, targeting, records)
