"""Flows in DynamoDB (the F rows of docs/data-model.md).

- ``flow`` / ``<flow_id>`` (Catalog): the flow, its status and current version.
- ``flowversion#<flow_id>`` / ``<n:06d>`` (Catalog): each version's settings and
  steps, never changed once written; a cohort runs on the version it entered.
- ``flow#<flow_id>`` / ``<contact_id>`` (Enrolments): a contact's run in the
  flow — at most one ``active`` at a time (a conditional write).
- ``cohort#<cohort_id>`` / ``<contact_id>`` (Catalog): the contacts walking one
  path of one execution together.
- ``flowcohort#<flow_id>`` / ``<cohort_id>`` (Catalog): a cohort's state.
- ``flowcohort#pending`` / ``<window end>#<cohort_id>`` (Catalog): a cohort that
  is filling and has no execution yet; the tick starts it once its window closes.
- ``flowlog#<flow_id>`` / ``<cohort_id>#<seq>#<page>`` (Catalog): what one step
  did for one page of a cohort, contact by contact; written once, with the
  step's counters in the same transaction (so a retried page counts once).
  The export reads these.
- Stats (``flow#<flow_id>`` / ``step#<step_id>``): counters per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from herald.store.stats import add_stats, read_stats
from herald.store.tables import (
    FLOW_ENTITY,
    LIVE_FLOW,
    CohortMemberRecord,
    FlowRecord,
    FlowRunRecord,
    FlowVersionRecord,
    StatsRecord,
    StepLogRecord,
)
from herald.store.transactions import default_connection

PENDING = "flowcohort#pending"
ACTIVE = "active"
# How a run ended: these are the "final results" the reset period looks at (seed 004).
COMPLETED = "completed"
CONVERTED = "converted"
LEFT = "left"


# -- keys -----------------------------------------------------------------------


def run_key(flow_id: str) -> str:
    return f"flow#{flow_id}"


def cohort_key(cohort_id: str) -> str:
    return f"cohort#{cohort_id}"


def cohorts_key(flow_id: str) -> str:
    return f"flowcohort#{flow_id}"


def version_key(flow_id: str) -> str:
    return f"flowversion#{flow_id}"


def log_key(flow_id: str) -> str:
    return f"flowlog#{flow_id}"


def stats_subject(flow_id: str) -> str:
    return f"flow#{flow_id}"


def version_id(number: int) -> str:
    return f"{number:06d}"


# -- reads ----------------------------------------------------------------------


def get(flow_id: str) -> FlowRecord | None:
    try:
        return FlowRecord.get(FLOW_ENTITY, flow_id, consistent_read=True)
    except FlowRecord.DoesNotExist:
        return None


def get_version(flow_id: str, number: int) -> FlowVersionRecord | None:
    try:
        return FlowVersionRecord.get(version_key(flow_id), version_id(number))
    except FlowVersionRecord.DoesNotExist:
        return None


def versions(flow_id: str) -> list[FlowVersionRecord]:
    return list(FlowVersionRecord.query(version_key(flow_id)))


def active_flows() -> list[FlowRecord]:
    return list(FlowRecord.live_index.query(LIVE_FLOW))


def runs(flow_id: str, contact_ids: list[str]) -> dict[str, FlowRunRecord]:
    """The runs of these contacts in the flow (strongly consistent BatchGetItem)."""
    keys = [(run_key(flow_id), c) for c in contact_ids]
    return {r.contact_id: r for r in FlowRunRecord.batch_get(keys, consistent_read=True)}


@dataclass
class MemberPage:
    members: dict[str, str]  # contact id -> run occurrence
    cursor: str | None


def members(cohort_id: str, cursor: str | None, limit: int) -> MemberPage:
    """One page of a cohort's members, in contact order, strongly consistent."""
    start = {"entity_type": {"S": cohort_key(cohort_id)}, "entity_id": {"S": cursor}} if cursor else None
    client: Any = default_connection().client
    request: dict[str, Any] = {
        "TableName": CohortMemberRecord.Meta.table_name,
        "KeyConditionExpression": "entity_type = :k",
        "ExpressionAttributeValues": {":k": {"S": cohort_key(cohort_id)}},
        "ConsistentRead": True,
        "Limit": limit,
    }
    if start:
        request["ExclusiveStartKey"] = start
    answer = client.query(**request)
    found = {item["entity_id"]["S"]: item["occurrence"]["S"] for item in answer.get("Items", [])}
    last = answer.get("LastEvaluatedKey")
    return MemberPage(found, last["entity_id"]["S"] if last else None)


def get_log(flow_id: str, page_id: str) -> StepLogRecord | None:
    """One page's step log (consistent): what a retried page acts on."""
    try:
        return StepLogRecord.get(log_key(flow_id), page_id, consistent_read=True)
    except StepLogRecord.DoesNotExist:
        return None


def logs(flow_id: str) -> Iterator[StepLogRecord]:
    """Every step log page of the flow (the export's source)."""
    yield from StepLogRecord.query(log_key(flow_id))


def step_stats(flow_id: str) -> dict[str, dict[str, Any]]:
    """Counters per step id."""
    return {metric.removeprefix("step#"): row for metric, row in read_stats(stats_subject(flow_id), "step#").items()}


# -- writes ---------------------------------------------------------------------


def put_members(cohort_id: str, members_: dict[str, str]) -> None:
    """Add contacts to a cohort (idempotent puts, 25 to a request)."""
    with CohortMemberRecord.batch_write() as batch:
        for contact_id, occurrence in members_.items():
            batch.save(CohortMemberRecord(cohort_key(cohort_id), contact_id, occurrence=occurrence))


def record_page(
    flow_id: str,
    log: StepLogRecord,
    counters: dict[str, int],
) -> bool:
    """Write a page's step log and add its counters, once: False if this page was already recorded."""
    client: Any = default_connection().client
    item = log.serialize()
    names = {f"#c{i}": name for i, name in enumerate(counters)}
    values = {f":c{i}": {"N": str(delta)} for i, delta in enumerate(counters.values())}
    writes: list[dict[str, Any]] = [
        {
            "Put": {
                "TableName": StepLogRecord.Meta.table_name,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(entity_id)",
            }
        }
    ]
    if counters:
        writes.append(
            {
                "Update": {
                    "TableName": StatsRecord.Meta.table_name,
                    "Key": {"subject": {"S": stats_subject(flow_id)}, "metric": {"S": f"step#{log.step_id}"}},
                    "UpdateExpression": "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(counters))),
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            }
        )
    try:
        client.transact_write_items(TransactItems=writes)
    except client.exceptions.TransactionCanceledException as exc:
        reasons = exc.response.get("CancellationReasons") or []
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            return False
        raise
    return True


def add_step_counters(flow_id: str, step_id: str, counters: dict[str, int]) -> None:
    """Counters the sender adds per step as its sends settle (sent, suppressed, failed ...)."""
    add_stats(stats_subject(flow_id), f"step#{step_id}", counters)


def mark_members_admitted(flow_id: str, at: str) -> None:
    """Note that the flow's segment members were all admitted (outside the ETag version: no edit conflicts)."""
    _update_flow(flow_id, "SET members_admitted_at = :at REMOVE admission_cursor", {":at": {"S": at}})


def save_admission_cursor(flow_id: str, segment: int, after: str) -> None:
    """Where an unfinished admission stopped, for the next tick to go on from."""
    cursor = {"M": {"segment": {"N": str(segment)}, "after": {"S": after}}}
    _update_flow(flow_id, "SET admission_cursor = :c", {":c": cursor})


def _update_flow(flow_id: str, expression: str, values: dict[str, Any]) -> None:
    client: Any = default_connection().client
    client.update_item(
        TableName=FlowRecord.Meta.table_name,
        Key={"entity_type": {"S": FLOW_ENTITY}, "entity_id": {"S": flow_id}},
        UpdateExpression=expression,
        ConditionExpression="attribute_exists(entity_id)",
        ExpressionAttributeValues=values,
    )
