"""Flow step: the state machine's task — one step of a flow for one page of a cohort (see herald.flows.runner)."""

from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from herald import clock
from herald.config import TableNames, require
from herald.flows import cohorts
from herald.flows.runner import Services, run_step
from herald.observability import logger, metrics, tracer
from herald.store import files
from herald.store.queues import QueueSender
from herald.store.tables import bind_tables

bind_tables(TableNames.from_env())
files.configure(require("FLOW_FILES_BUCKET"))
queue = QueueSender(require("DELIVERY_QUEUE_URL"))
stepfunctions = boto3.client("stepfunctions")


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """``event = {"state": <the cohort's place>, "state_machine_arn": ...}``; returns the next state."""
    state = event["state"]
    services = Services(queue.send, cohorts.Starter(stepfunctions, event["state_machine_arn"]))
    result = run_step(state, clock.now(), services)
    metrics.add_metric(name="FlowStepPages", unit=MetricUnit.Count, value=1)
    logger.info(
        "flow step",
        extra={k: result.get(k) for k in ("flow_id", "cohort_id", "step_id", "seq", "page", "action")},
    )
    return result
