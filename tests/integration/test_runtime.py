"""The embedded runtime's machinery on a test-only template.

SQS event sources behave like Lambda's poller (batch size, partial batch
failures, redrive to the DLQ), schedules invoke their function with
EventBridge's event, and state machines run on moto's interpreter with their
Lambda tasks dispatched to the in-process handlers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from local.event_sources import next_fire
from local.runtime import Runtime, RuntimeOptions, free_port

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "runtime" / "template.yaml"


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    instance = Runtime(RuntimeOptions(template_path=FIXTURE, api_port=free_port(), start_schedules=False))
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def records(table: str) -> dict[str, dict[str, Any]]:
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    return {item["record_id"]["S"]: item for item in items}


def test_sqs_batches_with_partial_failures_and_redrive(runtime: Runtime) -> None:
    sqs = boto3.client("sqs")
    work = runtime.provisioned.queues["WorkQueue"]
    dlq = runtime.provisioned.queues["WorkDeadLetterQueue"]
    # Given six messages, one of which the function always fails
    for body in ["m1", "m2", "m3", "m4", "m5", "fail-1"]:
        sqs.send_message(QueueUrl=work, MessageBody=body)
    # When the poller has run: the good ones are processed exactly once...
    got = wait_for(lambda: (r := records("RecordsTable")) and len(r) >= 5 and r)
    assert sorted(got) == ["m1", "m2", "m3", "m4", "m5"]
    assert all(item["deliveries"]["N"] == "1" for item in got.values())
    assert all(int(item["batch_size"]["N"]) <= 5 for item in got.values())
    # ...and the failed one is retried, then redriven to the DLQ after maxReceiveCount
    dead = wait_for(lambda: sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages"))
    assert [m["Body"] for m in dead] == ["fail-1"]


def test_schedule_fires_the_function_with_an_eventbridge_event(runtime: Runtime) -> None:
    assert runtime.scheduler is not None
    [schedule] = runtime.scheduler.schedules
    assert schedule.expression == "rate(1 minute)"
    result = runtime.scheduler.fire(schedule, datetime.now(UTC))
    assert result == {"ticked": True}
    assert any(key.startswith("tick-") for key in records("RecordsTable"))


def test_state_machine_lambda_tasks_run_in_process(runtime: Runtime) -> None:
    sfn = boto3.client("stepfunctions")
    [machine] = [m for m in sfn.list_state_machines()["stateMachines"] if m["name"] == "EchoStateMachine"]
    arn = machine["stateMachineArn"]
    ok = sfn.start_execution(stateMachineArn=arn, name="echo-ok", input=json.dumps({"value": 42}))
    boom = sfn.start_execution(stateMachineArn=arn, name="echo-boom", input=json.dumps({"explode": True}))

    def finished(arn: str) -> dict[str, Any] | None:
        description = sfn.describe_execution(executionArn=arn)
        return description if description["status"] != "RUNNING" else None

    succeeded = wait_for(lambda: finished(ok["executionArn"]))
    failed = wait_for(lambda: finished(boom["executionArn"]))
    assert succeeded["status"] == "SUCCEEDED"
    assert json.loads(succeeded["output"]) == {"echo": 42, "function": "TickerFunction"}
    assert failed["status"] == "FAILED"
    assert failed["error"] == "EchoFailed"


def test_schedule_expressions() -> None:
    start = datetime(2026, 11, 23, 8, 30, 15, tzinfo=UTC)
    assert next_fire("rate(5 minutes)", start) == datetime(2026, 11, 23, 8, 35, 15, tzinfo=UTC)
    assert next_fire("rate(1 day)", start) == datetime(2026, 11, 24, 8, 30, 15, tzinfo=UTC)
    assert next_fire("cron(0 2 * * ? *)", start) == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert next_fire("cron(*/15 * * * ? *)", start) == datetime(2026, 11, 23, 8, 45, tzinfo=UTC)
    # 2026-11-23 is a Monday; the next Friday 09:00 is the 27th
    assert next_fire("cron(0 9 ? * FRI *)", start) == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert next_fire("cron(0 0 1 JAN ? *)", start) == datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="unsupported"):
        next_fire("every tuesday", start)
