"""Run state machines with moto's interpreter, Lambda tasks in-process.

moto can execute Amazon States Language (its port of LocalStack's
interpreter) when ``stepfunctions.execute_state_machine`` is on. Its Lambda
tasks call ``lambda.invoke`` through a client made by one factory,
``boto_client_for``; the runtime wraps that factory so ``lambda`` clients
invoke the template's handlers in this process, the same handlers the API and
pollers run. Every other service the interpreter calls still goes to moto.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from moto.core.config import default_user_config
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

from local.functions import FunctionError, FunctionHost

_original_factory: Callable[..., Any] = lambda_eval_utils.boto_client_for


class InProcessLambdaClient:
    """Answers ``invoke`` like the Lambda API, by calling a local handler."""

    def __init__(self, host: FunctionHost) -> None:
        self.host = host

    def invoke(self, FunctionName: str, Payload: bytes | str | None = None, **_: Any) -> dict[str, Any]:  # noqa: N803
        event = json.loads(Payload) if Payload else {}
        try:
            result = self.host.invoke(FunctionName, event)
        except FunctionError as exc:
            body = json.dumps(exc.payload).encode()
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(body)}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode()), "ExecutedVersion": "$LATEST"}


def enable(host: FunctionHost) -> None:
    """Turn on moto's interpreter and route its Lambda tasks to ``host``."""
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    client = InProcessLambdaClient(host)

    def factory(region: str, service: str, state_credentials: Any = None) -> Any:
        if service == "lambda":
            return client
        return _original_factory(region=region, service=service, state_credentials=state_credentials)

    lambda_eval_utils.boto_client_for = factory


def disable() -> None:
    """Restore moto's defaults (used when a runtime stops)."""
    default_user_config["stepfunctions"] = {"execute_state_machine": False}
    lambda_eval_utils.boto_client_for = _original_factory
