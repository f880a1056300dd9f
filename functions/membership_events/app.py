"""Membership events: the memberships table's stream → enter/exit events on EventBridge.

Every segment, badge and audience membership change is written in a
transaction; its stream record is the outbox. This function turns INSERT into
``Membership Entered`` and REMOVE into ``Membership Exited`` events (flows
consume them). The stream record's id travels as ``event_id`` so consumers
can drop the duplicates that at-least-once delivery may bring.
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald.config import require
from herald.observability import logger, metrics, tracer
from herald.segments.events import EventPublisher, membership_event

publisher = EventPublisher(require("EVENT_BUS_NAME"))
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


def _process(record: Any) -> None:
    event = membership_event(record.raw_event)
    if event is None:
        return  # customer-group memberships and updates are not enter/exit events
    publisher.publish([event])
    metrics.add_metric(name="MembershipEventsPublished", unit=MetricUnit.Count, value=1)
    logger.debug("membership event", extra={"membership_event": event})


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=_process, processor=processor, context=context)
