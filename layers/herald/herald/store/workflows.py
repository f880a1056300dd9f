"""Starting Step Functions executions (the only module here that uses boto3 for it)."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3

from herald import clock


class StateMachineStarter:
    """Starts executions of one state machine with a readable, unique name."""

    def __init__(self, state_machine_arn: str, client: Any | None = None) -> None:
        self._arn = state_machine_arn
        self._client = client

    def _sfn(self) -> Any:
        if self._client is None:
            self._client = boto3.client("stepfunctions")
        return self._client

    def start_group_deletion(self, group_id: str, reason: str) -> str:
        """Start deleting a group; returns the execution ARN."""
        stamp = clock.now().strftime("%Y%m%dT%H%M%S%f")
        name = re.sub(r"[^A-Za-z0-9_-]", "-", f"delete-{group_id}")[:50] + f"-{stamp}"
        response = self._sfn().start_execution(
            stateMachineArn=self._arn,
            name=name,
            input=json.dumps({"group_id": group_id, "reason": reason}),
        )
        return str(response["executionArn"])
