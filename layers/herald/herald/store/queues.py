"""Sending JSON messages to an SQS queue in batches of ten."""

from __future__ import annotations

import json
from typing import Any

import boto3


class QueueSender:
    """Sends JSON bodies to one queue; a refused entry raises (nothing is silently lost)."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self._url = queue_url
        self._client = client

    def _sqs(self) -> Any:
        if self._client is None:
            self._client = boto3.client("sqs")
        return self._client

    def send(self, bodies: list[dict[str, Any]]) -> None:
        for start in range(0, len(bodies), 10):
            chunk = bodies[start : start + 10]
            entries = [{"Id": str(i), "MessageBody": json.dumps(body)} for i, body in enumerate(chunk)]
            response = self._sqs().send_message_batch(QueueUrl=self._url, Entries=entries)
            failed = response.get("Failed") or []
            if failed:
                raise RuntimeError(f"SQS refused {len(failed)} messages: {failed[0].get('Message')}")


_queue_urls: dict[str, str] = {}


def retry_later(source_arn: str, receipt_handle: str, seconds: int, client: Any | None = None) -> None:
    """Make a received message visible again only after ``seconds`` (ChangeMessageVisibility).

    ``source_arn`` is the record's ``eventSourceARN``; its queue URL is looked
    up once per process.
    """
    sqs = client or boto3.client("sqs")
    if source_arn not in _queue_urls:
        _, _, _, _, account, name = source_arn.split(":", 5)
        _queue_urls[source_arn] = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    sqs.change_message_visibility(
        QueueUrl=_queue_urls[source_arn], ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
    )
