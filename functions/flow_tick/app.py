"""Flow tick: an EventBridge schedule starts one execution per cohort whose entry window closed.

It also admits the segment members that flows still owe (a start date that has come, an admission a
request left unfinished, segments an edit added), from where the last attempt stopped.
"""

import time
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald import clock
from herald.config import TableNames, require
from herald.flows import cohorts, entry
from herald.observability import logger, metrics, tracer
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
# Stop admitting this long before the invocation's end; the rest goes on next tick from its cursor.
SAFETY_MS = 15_000
starter = cohorts.Starter(boto3.client("stepfunctions"), require("FLOW_STATE_MACHINE_ARN"))


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = clock.now()
    started = cohorts.start_due(now, starter)  # first: a long admission must not hold cohorts back
    deadline = time.monotonic() + max(0, context.get_remaining_time_in_millis() - SAFETY_MS) / 1000
    opened = entry.admit_owed(now, deadline)
    readmitted = entry.readmit_due(now, deadline)  # reset periods that ended
    metrics.add_metric(name="FlowCohortsStarted", unit=MetricUnit.Count, value=len(started))
    logger.info("flow tick", extra={"started": started, "opened": opened, "readmitted": readmitted})
    return {"started": started, "opened": opened, "readmitted": readmitted}
