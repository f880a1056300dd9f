"""Group deletion function: the Lambda tasks of the group deletion state machine."""

from typing import Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from herald.config import TableNames
from herald.observability import logger, metrics, tracer
from herald.store.tables import bind_tables
from herald.workflows.group_deletion import finish_deletion, unassign_members

bind_tables(TableNames.from_env())


class GroupDeletionTask(BaseModel):
    """The task input the state machine passes."""

    action: Literal["unassign_members", "finish_deletion"]
    group_id: str


@tracer.capture_lambda_handler
@logger.inject_lambda_context
@metrics.log_metrics
@event_parser(model=GroupDeletionTask)
def lambda_handler(task: GroupDeletionTask, context: LambdaContext) -> dict[str, Any]:
    if task.action == "unassign_members":
        progress = unassign_members(task.group_id)
        logger.info("unassigned members", extra={"group_id": task.group_id, **progress.__dict__})
        return {"unassigned": progress.unassigned, "failed": progress.failed, "more": progress.more}
    outcome = finish_deletion(task.group_id)
    logger.info("finished group deletion", extra={"group_id": task.group_id, "outcome": outcome})
    return {"outcome": outcome}
