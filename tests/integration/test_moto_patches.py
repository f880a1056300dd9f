"""The embedded AWS's DynamoDB transactions keep DynamoDB's semantics (local/moto_patches.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from local import moto_patches


@pytest.fixture
def table() -> Iterator[Any]:
    moto_patches.apply()
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="t",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def put(id_: str, **extra: Any) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": "t",
            "Item": {"id": {"S": id_}, **extra},
            "ConditionExpression": "attribute_not_exists(id)",
        }
    }


def ids(client: Any) -> list[str]:
    return sorted(item["id"]["S"] for item in client.scan(TableName="t")["Items"])


def test_a_failed_condition_writes_nothing_and_names_the_item(table: Any) -> None:
    table.put_item(TableName="t", Item={"id": {"S": "taken"}, "n": {"N": "1"}})
    with pytest.raises(ClientError) as caught:
        table.transact_write_items(
            TransactItems=[
                put("a"),
                put("taken"),
                {
                    "Update": {
                        "TableName": "t",
                        "Key": {"id": {"S": "b"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )
    reasons = [r["Code"] for r in caught.value.response["CancellationReasons"]]
    assert reasons == ["None", "ConditionalCheckFailed", "None"]
    assert ids(table) == ["taken"]


def test_conditions_see_the_state_before_the_transaction(table: Any) -> None:
    table.transact_write_items(TransactItems=[put("a"), put("b")])
    assert ids(table) == ["a", "b"]


def test_an_item_may_be_touched_once(table: Any) -> None:
    with pytest.raises(ClientError):
        table.transact_write_items(TransactItems=[put("a"), put("a")])
    assert ids(table) == []


def test_a_write_failing_half_way_is_undone_and_reported_as_a_reason(table: Any) -> None:
    table.put_item(TableName="t", Item={"id": {"S": "x"}, "n": {"N": "1"}})
    with pytest.raises(ClientError) as caught:
        table.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "t", "Item": {"id": {"S": "x"}, "n": {"N": "5"}}}},
                put("new"),
                {
                    "Update": {
                        "TableName": "t",
                        "Key": {"id": {"S": "y"}},
                        "UpdateExpression": "SET n = n + :s",  # adding a string to a missing number fails
                        "ExpressionAttributeValues": {":s": {"S": "oops"}},
                    }
                },
            ]
        )
    assert ids(table) == ["x"]
    assert table.get_item(TableName="t", Key={"id": {"S": "x"}})["Item"]["n"] == {"N": "1"}
    reasons = [r["Code"] for r in caught.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ValidationError"]


def test_concurrent_counter_transactions_are_isolated(table: Any) -> None:
    table.put_item(TableName="t", Item={"id": {"S": "counter"}, "n": {"N": "0"}})

    def bump(i: int) -> None:
        table.transact_write_items(
            TransactItems=[
                put(f"item{i}"),
                {
                    "Update": {
                        "TableName": "t",
                        "Key": {"id": {"S": "counter"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
            ]
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(bump, range(40)))
    assert table.get_item(TableName="t", Key={"id": {"S": "counter"}})["Item"]["n"] == {"N": "40"}
    assert len(ids(table)) == 41


def test_queue_attributes_are_moto_s_own_computed_per_key() -> None:
    from moto.sqs.models import sqs_backends

    moto_patches.apply()
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
        url = sqs.create_queue(
            QueueName="q.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true", "RedrivePolicy": policy},
        )["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g")
        sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g")  # deduplicated by content
        queue = sqs_backends["123456789012"]["us-east-1"].get_queue("q.fifo")
        lazy = dict(queue.attributes)
        original = moto_patches._ORIGINALS["queue_attributes"].fget(queue)
        assert lazy == original
        assert lazy["ApproximateNumberOfMessages"] == 1 and lazy["ContentBasedDeduplication"] == "true"
        answered = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert answered["ApproximateNumberOfMessages"] == "1" and "RedrivePolicy" in answered
