"""The sender: delivers the campaign tick's queued sends (SQS, partial batch responses).

Each SQS message holds one contact's sends (``herald.delivery.sender.DeliveryIn``);
the batch is handled together (``Sender.deliver_batch``: a few DynamoDB
requests per batch instead of several per message).
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
from herald.delivery.sender import DeliveryIn, Sender, Throttled, retry_delay
from herald.observability import logger, metrics, tracer
from herald.store.queues import retry_later
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
signing.configure(require("SIGNING_SECRET_ARN"))
email.configure(EmailSettings.from_env())
default_channels = channels.AwsChannels(require("SENDER_EMAIL"), os.environ.get("SES_CONFIGURATION_SET") or None)
processor = BatchProcessor(event_type=EventType.SQS)
SEND_MARGIN_MS = 30_000

METRICS = {
    "sent": "MessagesSent",
    "deferred": "MessagesDeferred",
    "expired": "MessagesExpired",
    "failed": "MessagesFailed",
    "suppressed": "MessagesSuppressed",
    "applied_points": "PointsApplied",
    "applied_stage": "StagesSet",
}


def _deliver_all(records: list[dict[str, Any]], sender: Sender) -> dict[str, Exception | None]:
    """Handle the batch together; the outcome of each SQS message by its id (an exception = retry it)."""
    outcomes: dict[str, Exception | None] = {}
    valid: list[tuple[str, DeliveryIn]] = []
    raw_by_id = {SQSRecord(raw).message_id: raw for raw in records}
    for raw in records:
        record = SQSRecord(raw)
        outcomes[record.message_id] = None
        try:
            valid.append((record.message_id, DeliveryIn.model_validate_json(record.body)))
        except ValidationError as exc:
            logger.error("malformed delivery message dropped", extra={"body": record.body[:500], "error": str(exc)})
            metrics.add_metric(name="DeliveryMessageRejected", unit=MetricUnit.Count, value=1)
    failures = sender.deliver_batch([delivery for _, delivery in valid])
    for position, failure in failures.items():
        logger.warning("delivery will be retried", extra={"error": str(failure), "sqs_message_id": valid[position][0]})
        outcomes[valid[position][0]] = failure
        if isinstance(failure, Throttled):
            _back_off(raw_by_id[valid[position][0]])
    return outcomes


def _back_off(raw: dict[str, Any]) -> None:
    """A throttled delivery comes back after a growing delay instead of the queue's visibility timeout."""
    record = SQSRecord(raw)
    receives = int(record.attributes.approximate_receive_count or 1)
    try:
        retry_later(record.event_source_arn, record.receipt_handle, retry_delay(receives))
    except Exception:  # the message still comes back after the queue's visibility timeout
        logger.exception("could not delay the throttled delivery", extra={"sqs_message_id": record.message_id})
    metrics.add_metric(name="DeliveryThrottled", unit=MetricUnit.Count, value=1)


def _outcome(record: SQSRecord, outcomes: dict[str, Exception | None]) -> None:
    failure = outcomes.get(record.message_id)
    if failure is not None:
        raise failure


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # A wave of sends starts only with time left for its slowest call (a webhook's budget) and the records.
    sender = Sender(
        channels.resolve(default_channels),
        has_time=lambda: context.get_remaining_time_in_millis() > SEND_MARGIN_MS,
    )
    try:
        outcomes = _deliver_all(event.get("Records", []), sender)
        # Powertools shapes the partial batch response from the outcomes decided above.
        return process_partial_response(
            event=event, record_handler=lambda record: _outcome(record, outcomes), processor=processor, context=context
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
