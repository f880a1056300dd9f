"""API function: API Gateway REST proxy events → the Herald API resolver."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from herald.api.app import build_api, serve
from herald.config import TableNames, require
from herald.observability import logger, metrics, tracer
from herald.store.tables import bind_tables
from herald.store.workflows import StateMachineStarter


class ApiSettings(BaseModel):
    """What the API function reads from its environment, once."""

    tables: TableNames
    group_deletion_state_machine_arn: str


settings = ApiSettings(
    tables=TableNames.from_env(),
    group_deletion_state_machine_arn=require("GROUP_DELETION_STATE_MACHINE_ARN"),
)
bind_tables(settings.tables)
resolver = build_api(StateMachineStarter(settings.group_deletion_state_machine_arn).start_group_deletion)


@tracer.capture_lambda_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(resolver, event, context)
