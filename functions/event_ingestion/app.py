"""SES event ingestion: bounces, complaints, deliveries, opens, clicks, rejects (SQS, partial batch responses).

SES publishes events to ``SesEventsTopic``; ``SesEventsQueue`` is subscribed
to it. Each SQS record holds one event (SNS-wrapped or raw, event-publishing
or notification format), applied once by :class:`herald.delivery.ingestion.Ingestor`.
A malformed, unknown or unmatched event is logged, counted and dropped
(retrying cannot fix it); a store error (throttling, a conflicting
transaction, a contact that kept changing) returns that record as a batch
item failure, and SQS retries it (after five receives it goes to the
dead-letter queue).
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald.config import TableNames
from herald.delivery.ingestion import Ingestor
from herald.observability import logger, metrics, tracer
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
processor = BatchProcessor(event_type=EventType.SQS)

METRICS = {
    "applied": "SesEventsApplied",
    "duplicate": "SesEventsDuplicate",
    "ignored": "SesEventsIgnored",
    "unmatched": "SesEventsUnmatched",
    "unknown": "SesEventsUnknown",
    "malformed": "SesEventsMalformed",
}


def _process(record: SQSRecord, ingestor: Ingestor) -> None:
    ingestor.ingest(record.body)


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    ingestor = Ingestor()
    try:
        return process_partial_response(
            event=event, record_handler=lambda record: _process(record, ingestor), processor=processor, context=context
        )
    finally:
        for outcome, name in METRICS.items():
            if ingestor.counts.get(outcome):
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=ingestor.counts[outcome])
