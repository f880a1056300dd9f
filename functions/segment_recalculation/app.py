"""Segment recalculation: the nightly planner (schedule) and the scan workers (SQS).

``planner_handler`` starts a run of every flexi segment and badge, queueing
one message per parallel-scan part. ``worker_handler`` scans a part; when the
invocation runs short of time it re-queues the part, which resumes from its
checkpoint. A malformed message is logged, counted and dropped; a failure
while scanning returns that message as a batch item failure for SQS to retry.
"""

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from herald.config import TableNames, require
from herald.observability import logger, metrics, tracer
from herald.segments import recalculation
from herald.store.queues import QueueSender
from herald.store.tables import bind_tables

# Leave this much of the invocation to finish a page and checkpoint it.
SAFETY_MS = 60_000

bind_tables(TableNames.from_env())
queue = QueueSender(require("RECALC_QUEUE_URL"))
parts = int(require("RECALC_PARTS"))
processor = BatchProcessor(event_type=EventType.SQS)


class PartMessage(BaseModel):
    """One parallel-scan part of a run."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1, max_length=100)
    part: int = Field(ge=0, le=999)


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def planner_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = recalculation.start_run("nightly", queue.send, parts)
    metrics.add_metric(name="RecalculationStarted", unit=MetricUnit.Count, value=1)
    logger.info("recalculation run started", extra={"run_id": run.entity_id, "targets": run.targets})
    return {"run_id": run.entity_id, "parts": parts}


def _process(record: SQSRecord, context: LambdaContext) -> None:
    try:
        message = PartMessage.model_validate_json(record.body)
    except ValidationError as exc:
        logger.error("malformed recalculation message dropped", extra={"body": record.body[:500], "error": str(exc)})
        metrics.add_metric(name="RecalculationMessageRejected", unit=MetricUnit.Count, value=1)
        return
    report = recalculation.process_part(
        message.run_id, message.part, has_time=lambda: context.get_remaining_time_in_millis() > SAFETY_MS
    )
    metrics.add_metric(name="ContactsEvaluated", unit=MetricUnit.Count, value=report.scanned)
    metrics.add_metric(name="MembershipChanges", unit=MetricUnit.Count, value=report.changes)
    if not report.finished and not report.superseded:
        queue.send([message.model_dump()])  # resume from the checkpoint in a fresh invocation


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def worker_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=lambda record: _process(record, context), processor=processor, context=context
    )
