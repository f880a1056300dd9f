"""A Herald on moto for integration tests, and helpers to call its API.

Resources come from ``template.yaml`` through the same provisioning code the
embedded runtime uses; functions run in-process through the same host, with
their template environment; API calls are real API Gateway proxy events.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from local import moto_patches, stepfunctions
from local.apigw import Route, http_response, proxy_event
from local.event_sources import SqsPoller, StreamPoller, sqs_sources, stream_sources
from local.functions import FunctionHost
from local.provision import provision
from local.template import Template, default_template, project_root

EVENTS = project_root() / "events"
_PROXY = Route.of("/{proxy+}", "ANY", "ApiFunction")


def load_event(name: str) -> dict[str, Any]:
    """A sample event from ``events/<function>/<case>.json``."""
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


def api_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A REST API proxy event for a request, as API Gateway sends it."""
    raw = body if isinstance(body, str) else (json.dumps(body) if body is not None else "")
    match = _PROXY.pattern.match(path.split("?")[0])
    assert match is not None
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return proxy_event(method, path, all_headers, raw.encode(), _PROXY, match)


@dataclass
class Reply:
    """An API response, decoded."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def etag(self) -> str:
        return self.headers["ETag"]


@dataclass
class Herald:
    """Herald's resources on moto and its functions in this process."""

    template: Template
    host: FunctionHost

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        """Call the API function as API Gateway would."""
        return self.send(api_event(method, path, body, headers))

    def send(self, event: dict[str, Any]) -> Reply:
        """Send a prepared proxy event to the API function."""
        status, headers, body = http_response(self.host.invoke("ApiFunction", event))
        return Reply(status, headers, json.loads(body) if body else None)

    def subscribe_queue(self, topic_logical_id: str, queue_name: str) -> str:
        """A new SQS queue subscribed to one of the template's topics (to read what it publishes); its URL."""
        arn = self.topic_arn(topic_logical_id)
        sqs = boto3.client("sqs")
        url: str = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns").subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        return url

    def topic_arn(self, logical_id: str) -> str:
        """The ARN of one of the template's topics."""
        topic = self.template.physical_name(logical_id)
        topics = boto3.client("sns").list_topics()["Topics"]
        return str(next(t["TopicArn"] for t in topics if t["TopicArn"].endswith(f":{topic}")))

    def drain(self, function: str, limit: int = 10_000) -> int:
        """Deliver the function's SQS messages until its queue is empty; returns batches run."""
        sources = [s for s in sqs_sources(self.template, self._queue_urls()) if s.function == function]
        batches = 0
        for source in sources:
            poller = SqsPoller(source, self.host, self.template.region)
            while batches < limit and poller.poll_once():
                batches += 1
        return batches

    def pump_streams(self) -> int:
        """Deliver every pending DynamoDB stream record to its function; returns records read."""
        if not hasattr(self, "_stream_pollers"):
            self._stream_pollers = [
                StreamPoller(source, self.host, self.template.region)
                for source in stream_sources(self.template, self._queue_urls())
            ]
        return sum(poller.poll_once() for poller in self._stream_pollers)

    def queue_url(self, logical_id: str) -> str:
        return self._queue_urls()[logical_id]

    def queue_messages(self, logical_id: str) -> list[Any]:
        """Take every message waiting in a queue, decoded from JSON (they are deleted)."""
        sqs = boto3.client("sqs")
        url = self.queue_url(logical_id)
        bodies: list[Any] = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return bodies
            bodies += [json.loads(m["Body"]) for m in batch]
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    def _queue_urls(self) -> dict[str, str]:
        """Every queue's URL by logical id, looked up once (the template's queues never change)."""
        if not hasattr(self, "_urls"):
            sqs = boto3.client("sqs")
            self._urls = {
                lid: sqs.get_queue_url(QueueName=self.template.physical_name(lid))["QueueUrl"]
                for lid in self.template.of_type("AWS::SQS::Queue")
            }
        return dict(self._urls)

    def wait_for_executions(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until no execution of any state machine is running; returns them all."""
        sfn = boto3.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            executions = [
                execution
                for machine in sfn.list_state_machines()["stateMachines"]
                for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]
            ]
            if all(e["status"] != "RUNNING" for e in executions) or time.monotonic() > deadline:
                return executions
            time.sleep(0.05)


@contextlib.contextmanager
def moto_herald(template_path: Path | None = None) -> Iterator[Herald]:
    """Provision a template on moto's mock and host its functions."""
    moto_patches.apply()
    from herald import signing

    signing.clear_cache()  # each moto Herald generates its own signing secret
    with mock_aws():
        template = Template(template_path) if template_path else default_template()
        host = FunctionHost(template.functions())
        stepfunctions.enable(host)  # before provisioning: machines live in the interpreter's backend
        provision(template)
        try:
            yield Herald(template, host)
        finally:
            stepfunctions.disable()
