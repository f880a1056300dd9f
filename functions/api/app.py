"""API function: API Gateway REST proxy events → the Herald API resolver."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from herald import signing
from herald.api import flow_export
from herald.api.app import build_api, serve
from herald.campaigns.alerts import Notifier
from herald.campaigns.service import Services
from herald.config import TableNames, require
from herald.observability import logger, metrics, tracer
from herald.segments.service import Runner
from herald.store import files
from herald.store.queues import QueueSender
from herald.store.tables import bind_tables
from herald.store.workflows import StateMachineStarter


class ApiSettings(BaseModel):
    """What the API function reads from its environment, once."""

    tables: TableNames
    group_deletion_state_machine_arn: str
    recalc_queue_url: str
    recalc_parts: int
    alerts_topic_arn: str


settings = ApiSettings(
    tables=TableNames.from_env(),
    group_deletion_state_machine_arn=require("GROUP_DELETION_STATE_MACHINE_ARN"),
    recalc_queue_url=require("RECALC_QUEUE_URL"),
    recalc_parts=int(require("RECALC_PARTS")),
    alerts_topic_arn=require("ALERTS_TOPIC_ARN"),
)
bind_tables(settings.tables)
signing.configure(require("SIGNING_SECRET_ARN"))
files.configure(require("FLOW_FILES_BUCKET"))
flow_export.configure(QueueSender(require("FLOW_EXPORT_QUEUE_URL")).send)
resolver = build_api(
    StateMachineStarter(settings.group_deletion_state_machine_arn).start_group_deletion,
    Runner(QueueSender(settings.recalc_queue_url).send, settings.recalc_parts),
    Services(notifier=Notifier(settings.alerts_topic_arn)),
)


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(resolver, event, context)
