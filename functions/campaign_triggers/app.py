"""Campaign triggers: the activity table's stream → trigger campaigns (see herald.campaigns.triggers).

A record that is not a new event is ignored; a malformed one is logged,
counted and dropped; a store or queue failure returns the record as a batch
item failure, retried by the stream and finally sent to the on-failure queue.
"""

from datetime import datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald import clock
from herald.campaigns.triggers import on_event
from herald.config import TableNames, require
from herald.dynamodb_json import decode_item
from herald.observability import logger, metrics, tracer
from herald.store.queues import QueueSender
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
queue = QueueSender(require("DELIVERY_QUEUE_URL"))
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def _process(record: Any) -> None:
    raw = record.raw_event
    if raw.get("eventName") != "INSERT":
        return
    try:
        item = decode_item(raw["dynamodb"]["NewImage"])
        contact_id, event_id, event_type = item["contact_id"], item["event_id"], item["event_type"]
        occurred_at = datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError) as exc:
        logger.error("malformed activity record dropped", extra={"record": str(raw)[:500], "error": str(exc)})
        metrics.add_metric(name="TriggerRecordRejected", unit=MetricUnit.Count, value=1)
        return
    caused_by = (item.get("properties") or {}).get("campaign_id")
    report = on_event(contact_id, event_id, event_type, occurred_at, clock.now(), queue.send, caused_by=caused_by)
    if report.fired:
        metrics.add_metric(name="TriggersFired", unit=MetricUnit.Count, value=len(report.fired))
        logger.info("triggers fired", extra={"event_id": event_id, "campaigns": report.fired})


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=_process, processor=processor, context=context)
