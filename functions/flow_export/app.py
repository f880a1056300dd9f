"""Flow export job: builds a large flow export (queued by GET /flows/{id}/export) into S3.

One message is one export: ``{"flow_id", "key"}``. A failed build is retried by
SQS (the same key is written again) and ends in the DLQ after 3 tries; a
malformed message is logged, counted and dropped.
"""

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald.config import TableNames, require
from herald.flows.export import write_export
from herald.observability import logger, metrics, tracer
from herald.store import files
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
files.configure(require("FLOW_FILES_BUCKET"))
processor = BatchProcessor(event_type=EventType.SQS)


def _process(record: Any) -> None:
    try:
        job = json.loads(record.body)
        flow_id, key = str(job["flow_id"]), str(job["key"])
    except (ValueError, KeyError, TypeError):
        logger.error("malformed export job dropped", extra={"body": str(record.body)[:500]})
        metrics.add_metric(name="FlowExportRejected", unit=MetricUnit.Count, value=1)
        return
    if not key.startswith(f"exports/flows/{flow_id}/"):
        logger.error("export job with a foreign key dropped", extra={"flow_id": flow_id, "key": key})
        metrics.add_metric(name="FlowExportRejected", unit=MetricUnit.Count, value=1)
        return
    rows = write_export(flow_id, key)
    metrics.add_metric(name="FlowExportsWritten", unit=MetricUnit.Count, value=1)
    logger.info("flow export written", extra={"flow_id": flow_id, "key": key, "rows": rows})


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=_process, processor=processor, context=context)
