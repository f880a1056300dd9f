"""Campaign statistics: counters per subject (``campaign#<id>``) and metric row (``total``, ``day#…``, ``hour#…``).

Every writer adds with one ``UpdateItem`` (``ADD`` counters, ``SET`` figures), so
concurrent ticks, senders and event ingestion never overwrite each other.

``hour#YYYY-MM-DDTHH`` rows (UTC) hold what the sending guardrails need over a
sliding window: ``sent`` (the sender), ``bounced_hard`` and ``complaints``
(event ingestion). They are only useful for the longest window (168 hours),
so each carries ``expiration`` (the table's TTL attribute): DynamoDB deletes
it :data:`HOUR_ROW_DAYS` days after its hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from herald.dynamodb_json import decode_item
from herald.store.tables import StatsRecord
from herald.store.transactions import default_connection


def subject(campaign_id: str) -> str:
    """The stats partition of a campaign (the same key as its enrolments' program)."""
    return f"campaign#{campaign_id}"


HOUR_PREFIX = "hour#"
HOUR_ROW_DAYS = 8  # the longest guardrail window (7 days) and a day's margin
TTL_ATTRIBUTE = "expiration"


def hour_of(moment: datetime) -> str:
    """The hour row's metric name of a moment: ``hour#YYYY-MM-DDTHH`` (UTC, sortable as text)."""
    return HOUR_PREFIX + moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


def hour_start(metric: str) -> datetime:
    """The start of an hour row's hour (the inverse of :func:`hour_of`)."""
    return datetime.strptime(metric.removeprefix(HOUR_PREFIX), "%Y-%m-%dT%H").replace(tzinfo=UTC)


def hour_expiration(metric: str) -> int:
    """The epoch second at which an hour row may be deleted by the table's TTL."""
    return int((hour_start(metric) + timedelta(days=HOUR_ROW_DAYS)).timestamp())


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


def read_hours(subject: str, first: str, last: str) -> dict[str, dict[str, Any]]:
    """The subject's hour rows from ``first`` to ``last`` (metric names, inclusive): one consistent Query.

    A Query rather than a BatchGetItem of the window's keys: one request whatever
    the window (BatchGetItem takes at most 100 keys; a window is up to 168 hours),
    and hours without a row cost nothing.
    """
    query: dict[str, Any] = {
        "TableName": StatsRecord.Meta.table_name,
        "KeyConditionExpression": "subject = :s AND metric BETWEEN :first AND :last",
        "ExpressionAttributeValues": {":s": {"S": subject}, ":first": {"S": first}, ":last": {"S": last}},
        "ConsistentRead": True,
    }
    return _rows(query)


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
    return _rows(query)


def _rows(query: dict[str, Any]) -> dict[str, dict[str, Any]]:
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
