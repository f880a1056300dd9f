"""The sender: delivers the campaign tick's queued sends (SQS, partial batch responses).

Each SQS message holds one contact's sends (``herald.delivery.sender.DeliveryIn``).
A malformed message is logged, counted and dropped (retrying cannot fix it);
a throttled provider or a store error returns that message as a batch item
failure, and SQS retries it (after five receives it goes to the dead-letter
queue). Redelivery never sends twice: every message id is claimed before
its send. Statistics are added once per batch.
"""

import os
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from herald import signing
from herald.config import EmailSettings, TableNames, require
from herald.delivery import channels, email
from herald.delivery.sender import DeliveryIn, Sender
from herald.observability import logger, metrics, tracer
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
signing.configure(require("SIGNING_SECRET_ARN"))
email.configure(EmailSettings.from_env())
default_channels = channels.AwsChannels(require("SENDER_EMAIL"), os.environ.get("SES_CONFIGURATION_SET") or None)
processor = BatchProcessor(event_type=EventType.SQS)

METRICS = {
    "sent": "MessagesSent",
    "deferred": "MessagesDeferred",
    "expired": "MessagesExpired",
    "failed": "MessagesFailed",
    "suppressed": "MessagesSuppressed",
    "applied_points": "PointsApplied",
    "applied_stage": "StagesSet",
}


def _process(record: SQSRecord, sender: Sender) -> None:
    try:
        delivery = DeliveryIn.model_validate_json(record.body)
    except ValidationError as exc:
        logger.error("malformed delivery message dropped", extra={"body": record.body[:500], "error": str(exc)})
        metrics.add_metric(name="DeliveryMessageRejected", unit=MetricUnit.Count, value=1)
        return
    sender.deliver(delivery)


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    sender = Sender(channels.resolve(default_channels))
    try:
        return process_partial_response(
            event=event, record_handler=lambda record: _process(record, sender), processor=processor, context=context
        )
    finally:
        totals = sender.tally.totals()
        for outcome, name in METRICS.items():
            if totals.get(outcome):
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=totals[outcome])
        try:
            sender.flush_stats()
        except Exception:
            logger.exception("campaign statistics not updated")
            metrics.add_metric(name="DeliveryStatsFailed", unit=MetricUnit.Count, value=1)
