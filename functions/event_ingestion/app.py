"""SES event ingestion: bounces, complaints, deliveries, opens, clicks, rejects (SQS, partial batch responses).

SES publishes events to ``SesEventsTopic``; ``SesEventsQueue`` is subscribed
to it. Each SQS record holds one event (SNS-wrapped or raw, event-publishing
or notification format), applied once by :class:`herald.delivery.ingestion.Ingestor`.
A malformed, unknown or unmatched event is logged, counted and dropped
(retrying cannot fix it); a store error (throttling, a conflicting
transaction, a contact that kept changing) returns that record as a batch
item failure, and SQS retries it (after five receives it goes to the
dead-letter queue).

After the batch, the sending guardrails check every campaign that got a hard
bounce or complaint in it (:func:`herald.campaigns.guardrails.check`): one
over its threshold is paused and an alert published to
``CampaignAlertsTopic``. A guardrail failure is logged and counted
(``GuardrailErrors``) but never fails the SES events, which are applied
already; the next bad event of the campaign checks it again.
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald.campaigns import guardrails
from herald.campaigns.alerts import Notifier
from herald.config import TableNames, require
from herald.delivery.ingestion import Ingestor
from herald.observability import logger, metrics, tracer
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
processor = BatchProcessor(event_type=EventType.SQS)
notifier = Notifier(require("ALERTS_TOPIC_ARN"))

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
        response = process_partial_response(
            event=event, record_handler=lambda record: _process(record, ingestor), processor=processor, context=context
        )
    finally:
        for outcome, name in METRICS.items():
            if ingestor.counts.get(outcome):
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=ingestor.counts[outcome])
    _check_guardrails(ingestor.guarded)
    return response


def _check_guardrails(campaign_ids: set[str]) -> None:
    """Check the campaigns that got hard bounces or complaints; never fails the (applied) batch."""
    if not campaign_ids:
        return
    try:
        report = guardrails.check(campaign_ids, notifier)
    except Exception:  # the events are applied; the next bad event checks again
        logger.exception("guardrail check failed", extra={"campaign_ids": sorted(campaign_ids)})
        metrics.add_metric(name="GuardrailErrors", unit=MetricUnit.Count, value=1)
        return
    if report.errors:
        metrics.add_metric(name="GuardrailErrors", unit=MetricUnit.Count, value=report.errors)
    if report.paused:
        metrics.add_metric(name="GuardrailPauses", unit=MetricUnit.Count, value=len(report.paused))
    if report.publish_failures:
        metrics.add_metric(name="GuardrailAlertPublishFailures", unit=MetricUnit.Count, value=report.publish_failures)
