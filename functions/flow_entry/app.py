"""Flow entry: the memberships table's stream admits contacts who joined a segment to its active flows.

The nightly pass's enter events and online recalculation both write a
membership item; its INSERT is the entry. A batch is handled together (one
read of the active flows, chunked conditional writes); a failure retries the
batch, and the run conditions make the retry enter nobody twice.
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald import clock
from herald.config import TableNames
from herald.flows.entry import on_memberships
from herald.observability import logger, metrics, tracer
from herald.segments.model import GroupType
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
SEGMENT_PREFIX = GroupType.SEGMENT.prefix


def segment_entries(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(segment_id, contact_id)`` of every segment membership INSERT in the batch."""
    entered = []
    for record in records:
        if record.get("eventName") != "INSERT":
            continue
        keys = (record.get("dynamodb") or {}).get("Keys") or {}
        group_key = (keys.get("group_key") or {}).get("S", "")
        contact_id = (keys.get("contact_id") or {}).get("S")
        if group_key.startswith(SEGMENT_PREFIX) and contact_id:
            entered.append((group_key.removeprefix(SEGMENT_PREFIX), contact_id))
    return entered


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    entered = segment_entries(event.get("Records") or [])
    if not entered:
        return {"admitted": 0}
    report = on_memberships(entered, clock.now())
    metrics.add_metric(name="FlowEntries", unit=MetricUnit.Count, value=report.admitted)
    metrics.add_metric(name="FlowEntriesRefused", unit=MetricUnit.Count, value=report.not_again + report.closed)
    logger.info(
        "flow entry",
        extra={
            "admitted": report.admitted,
            "already_in": report.already_in,
            "not_again": report.not_again,
            "closed": report.closed,
        },
    )
    return {"admitted": report.admitted, "already_in": report.already_in, "not_again": report.not_again}
