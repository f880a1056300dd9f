"""Campaign statistics: counters per subject (``campaign#<id>``) and metric row (``total``, ``day#…``).

Every writer adds with one ``UpdateItem`` (``ADD`` counters, ``SET`` figures), so
concurrent ticks, senders and event ingestion never overwrite each other.
"""

from __future__ import annotations

from typing import Any

from herald.dynamodb_json import decode_item
from herald.store.tables import StatsRecord
from herald.store.transactions import default_connection


def subject(campaign_id: str) -> str:
    """The stats partition of a campaign (the same key as its enrolments' program)."""
    return f"campaign#{campaign_id}"


def add_stats(subject: str, metric: str, deltas: dict[str, int], sets: dict[str, Any] | None = None) -> None:
    """Add to counters (and set values) on one stats row, in one UpdateItem."""
    clauses = []
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    adds = [f"#a{i} :a{i}" for i, name in enumerate(deltas) if deltas[name]]
    for i, (name, delta) in enumerate(deltas.items()):
        if delta:
            names[f"#a{i}"] = name
            values[f":a{i}"] = {"N": str(delta)}
    if adds:
        clauses.append("ADD " + ", ".join(adds))
    if sets:
        assignments = []
        for i, (name, value) in enumerate(sets.items()):
            names[f"#s{i}"] = name
            values[f":s{i}"] = {"N": str(value)} if isinstance(value, int | float) else {"S": str(value)}
            assignments.append(f"#s{i} = :s{i}")
        clauses.append("SET " + ", ".join(assignments))
    if not clauses:
        return
    client: Any = default_connection().client
    client.update_item(
        TableName=StatsRecord.Meta.table_name,
        Key={"subject": {"S": subject}, "metric": {"S": metric}},
        UpdateExpression=" ".join(clauses),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def read_stats(subject: str, metric_prefix: str | None = None) -> dict[str, dict[str, Any]]:
    """Every stats row of a subject as plain numbers/strings, by metric."""
    query: dict[str, Any] = {
        "TableName": StatsRecord.Meta.table_name,
        "KeyConditionExpression": "subject = :s",
        "ExpressionAttributeValues": {":s": {"S": subject}},
        "ConsistentRead": True,
    }
    if metric_prefix:
        query["KeyConditionExpression"] += " AND begins_with(metric, :p)"
        query["ExpressionAttributeValues"][":p"] = {"S": metric_prefix}
    rows: dict[str, dict[str, Any]] = {}
    client: Any = default_connection().client
    while True:
        page = client.query(**query)
        for item in page.get("Items", []):
            metric = item.pop("metric")["S"]
            item.pop("subject", None)
            rows[metric] = decode_item(item)
        if "LastEvaluatedKey" not in page:
            return rows
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
