"""Flow tick: an EventBridge schedule starts one execution per cohort whose entry window closed.

It also admits the segment members of flows that were activated before their start date, once it comes.
"""

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
starter = cohorts.Starter(boto3.client("stepfunctions"), require("FLOW_STATE_MACHINE_ARN"))


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    now = clock.now()
    opened = entry.admit_opened_flows(now)  # flows activated ahead of their start
    started = cohorts.start_due(now, starter)
    metrics.add_metric(name="FlowCohortsStarted", unit=MetricUnit.Count, value=len(started))
    logger.info("flow tick", extra={"started": started, "opened": opened})
    return {"started": started, "opened": opened}
