"""Make moto's DynamoDB (and SQS) behave like AWS, at a cost proportional to the work.

Emulator flaws corrected for the embedded runtime and the tests:

Items: moto builds each stored item through a dict that re-adds the size of
every attribute on every attribute it sets, so storing an item costs the
square of its attribute count. The replacement builds the attributes, then
checks the same 400 KB limit once.

Conditions: moto re-parses a condition expression on every write; parsed
conditions are kept (by expression, names and values), as they are pure.

Requests: moto parses every request through botocore's service model. For
DynamoDB's item operations, whose JSON bodies hold nothing but strings,
numbers, booleans, lists and maps unless an attribute is binary, that parse
equals ``json.loads`` and costs a quarter of a bulk write; those requests are
read as JSON (binary attributes still take moto's parser).

Transactions:
moto 5's ``transact_write_items`` deep-copies every table a transaction
touches so it can roll back, which makes each transaction cost the size of
the table (a 100,000-contact import becomes quadratic), and it is not
isolated from writes made by other server threads in the meantime.

The replacement here is two-phase, as DynamoDB's semantics are: every
condition is evaluated against the state before the transaction, and only if
all pass are the writes applied. It holds one lock, which single-item writes
and reads also take, so a transaction is atomic with respect to every other
request, and no read iterates a table while a write changes it.
Only the touched items are copied, to undo a write that fails half-way
(an invalid update expression, say).

Scans: moto sorts the whole table and compares every earlier item on each
page, so a full paginated scan (the nightly segment pass) is quadratic; a
plain scan of a hash-only table now bisects to its start key. And moto
serialises every response through botocore's shape model, value by value;
item reads, already DynamoDB JSON, are dumped as JSON.

SQS: a queue's attributes (read for one flag on every send) are computed per
key instead of all at once, the message counts included: sending to a queue
holding n messages no longer costs O(n) per message.
"""

from __future__ import annotations

import bisect
import copy
import functools
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from moto.core.utils import camelcase_to_underscores
from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    ItemSizeTooLarge,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models import table as dynamodb_table
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict, bytesize
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, Table
from moto.dynamodb.responses import DynamoHandler
from moto.sqs.models import Queue

_WRITE_LOCK = threading.RLock()
_ORIGINALS: dict[str, Callable[..., Any]] = {}


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    return wrapper


def _item_key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        key: dict[str, Any] = op["Key"]
        return key
    table = backend.get_table(op["TableName"])
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """Two-phase TransactWriteItems: check every condition, then apply every write."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _WRITE_LOCK:
        plan = _check(self, transact_items)
        _apply(self, plan)


def _check(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    seen: set[tuple[str, str]] = set()
    errors: list[tuple[Any, Any, Any]] = []
    plan = []
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise MockValidationException("Unsupported transaction operation")
        key = _item_key(backend, op_type, op)
        identity = (str(op["TableName"]), str(dict(sorted(key.items()))))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        current = backend.get_item(op["TableName"], key)
        error: tuple[Any, Any, Any] = (None, None, None)
        if op.get("ConditionExpression") is not None:
            condition = cached_filter_expression(
                op["ConditionExpression"], op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            )
            if not condition.expr(current):
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old = current.to_json()["Attributes"]
                error = ("ConditionalCheckFailed", ConditionalCheckFailed().message, old)
        errors.append(error)
        snapshot = copy.deepcopy(current.to_json()["Attributes"]) if current else None
        plan.append((op_type, {**op, "_key": key}, snapshot))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)
    return plan


def _apply(backend: DynamoDBBackend, plan: list[tuple[str, dict[str, Any], Any]]) -> None:
    # Each item's snapshot is recorded before its write: a write that fails half-way
    # (moto may change an item in place before refusing it) is undone too.
    applied: list[tuple[dict[str, Any], Any]] = []
    try:
        for op_type, op, snapshot in plan:
            applied.append((op, snapshot))
            table_name, key = op["TableName"], op["_key"]
            names, values = op.get("ExpressionAttributeNames") or {}, op.get("ExpressionAttributeValues") or {}
            if op_type == "Put":
                backend.put_item(table_name, op["Item"])
            elif op_type == "Delete":
                backend.delete_item(table_name, key)
            elif op_type == "Update":
                backend.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
    except Exception as exc:
        for op, snapshot in reversed(applied):
            if snapshot is None:
                backend.delete_item(op["TableName"], op["_key"])
            else:
                backend.put_item(op["TableName"], snapshot)
        # DynamoDB reports an item it refuses as a cancellation reason, not a request error.
        reasons: list[tuple[Any, Any, Any]] = [(None, None, None)] * len(plan)
        reasons[len(applied) - 1] = ("ValidationError", getattr(exc, "message", str(exc)), None)
        raise TransactionCanceledException(reasons) from exc


# DynamoDB's item size limit as moto enforces it (between 409 and 410 KB in practice).
ITEM_SIZE_LIMIT = 405000


def item_init(self: Item, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]) -> None:
    """``Item.__init__`` with one size check instead of one per attribute."""
    self.hash_key = hash_key
    self.range_key = range_key
    values = LimitedSizeDict()
    dict.update(values, {key: DynamoType(value) for key, value in attrs.items()})
    if sum(bytesize(key) + value.size() for key, value in values.items()) > ITEM_SIZE_LIMIT:
        raise ItemSizeTooLarge
    self.attrs = values


@functools.lru_cache(maxsize=4096)
def _parsed_condition(expression: str | None, names: str, values: str) -> Any:
    return _ORIGINAL_FILTER(expression, json.loads(names), json.loads(values))


def cached_filter_expression(expression: str | None, names: Any, values: Any) -> Any:
    """moto's ``get_filter_expression``, memoised on its (JSON-able) arguments."""
    if expression is None:
        return _ORIGINAL_FILTER(expression, names, values)
    return _parsed_condition(expression, json.dumps(names, sort_keys=True), json.dumps(values, sort_keys=True))


_ORIGINAL_FILTER = get_filter_expression


# Item operations whose request bodies are plain JSON unless they carry binary attributes.
_PLAIN_JSON_ACTIONS = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "GetItem",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "TransactGetItems",
        "Query",
        "Scan",
    }
)


def parse_parameters(self: DynamoHandler, request: Any) -> None:
    """moto's request parsing, with plain JSON for item operations without binary values."""
    body = request.data or b""
    action = self._get_action()
    if action in _PLAIN_JSON_ACTIONS and b'"B"' not in body and b'"BS"' not in body:
        self.params = json.loads(body) if body else {}
        return
    _ORIGINALS["parse"](self, request)


def table_scan(
    self: Table,
    filters: dict[str, Any],
    limit: int,
    exclusive_start_key: dict[str, Any] | None,
    filter_expression: Any = None,
    index_name: str | None = None,
    consistent_read: bool = False,
    projection_expression: Any = None,
    segments: Any = (None, None),
) -> tuple[list[Item], int, dict[str, Any] | None]:
    """``Table.scan`` that starts at its page instead of walking every earlier item.

    moto sorts the whole table and compares every item before the start key on
    each page, so a full paginated scan is quadratic; the nightly pass scans
    every contact. For a plain scan of a string-keyed, hash-only table this
    jumps to the start key by bisection. Segments, limits, the 1 MB page size,
    filters and projections behave as moto's.
    """
    if index_name or filters or self.range_key_attr or self.hash_key_type != "S":
        return _ORIGINALS["table_scan"](
            self,
            filters,
            limit,
            exclusive_start_key,
            filter_expression,
            index_name,
            consistent_read,
            projection_expression,
            segments,
        )
    keys = sorted(self.items, key=lambda key: key.value)
    start = 0
    if exclusive_start_key:
        values = [key.value for key in keys]
        start = bisect.bisect_right(values, exclusive_start_key[self.hash_key_attr]["S"])
    results: list[Item] = []
    size = scanned = 0
    last_key = None
    for key in keys[start:]:
        item: Item = self.items[key]  # type: ignore[assignment]  # hash-only: key -> item
        if not item.is_within_segment(segments):
            continue
        item_size = item.size()
        if len(results) == limit or size + item_size > RESULT_SIZE_LIMIT:
            last_key = self._get_last_evaluated_key(results[-1], None)
            break
        results.append(copy.deepcopy(item))  # serialised after the lock is released
        size += item_size
        scanned += 1
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expression:
        results = [item.project(projection_expression) for item in results]
    return results, scanned, last_key


# Item-heavy responses: their results are already DynamoDB JSON.
_PLAIN_JSON_RESPONSES = frozenset({"Scan", "Query", "GetItem", "BatchGetItem", "TransactGetItems"})


def serialized(self: DynamoHandler, action_result: Any) -> Any:
    """moto's response serialisation, with plain JSON for item reads.

    moto 5.2 walks botocore's shape model for every value of every item it
    returns (4 s for one 500-item Scan page, 20 times the scan itself); the
    results of item reads are DynamoDB JSON already, so they are dumped as is.
    Anything JSON cannot hold (binary attributes) takes moto's serialiser.
    """
    result = action_result.result
    if self._get_action() in _PLAIN_JSON_RESPONSES and isinstance(result, dict):
        try:
            body = json.dumps(result, separators=(",", ":"))
        except (TypeError, ValueError):
            return _ORIGINALS["serialized"](self, action_result)
        headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
        return 200, headers, body
    return _ORIGINALS["serialized"](self, action_result)


class LazyQueueAttributes(Mapping[str, Any]):
    """An SQS queue's attributes, each computed only when read.

    moto's ``Queue.attributes`` builds every attribute, including the message counts
    (a walk over all messages), and ``send_message`` reads it for one flag per message:
    sending n messages to a queue cost O(n²) (0.6 s per batch of 10 at 2,500 messages).
    The keys are exactly moto's; each value is computed as moto computes it.
    """

    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    def _names(self) -> list[str]:
        queue = self._queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if getattr(queue, "kms_master_key_id", None):
            names += queue.KMS_ATTRIBUTES
        if queue.policy:
            names.append("Policy")
        if queue.redrive_policy:
            names.append("RedrivePolicy")
        return list(dict.fromkeys(names))

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        queue = self._queue
        if name == "Policy":
            return queue.policy
        if name == "RedrivePolicy":
            return json.dumps(queue.redrive_policy)
        value = getattr(queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def queue_attributes(self: Queue) -> LazyQueueAttributes:
    return LazyQueueAttributes(self)


def apply() -> None:
    """Install the replacements (idempotent)."""
    if _ORIGINALS:
        return
    _ORIGINALS["parse"] = DynamoHandler.parse_parameters
    DynamoHandler.parse_parameters = parse_parameters  # type: ignore[method-assign,assignment]
    _ORIGINALS["filter"] = dynamodb_models.get_filter_expression
    dynamodb_models.get_filter_expression = cached_filter_expression  # type: ignore[assignment]
    dynamodb_table.get_filter_expression = cached_filter_expression  # type: ignore[assignment]
    _ORIGINALS["item_init"] = Item.__init__
    Item.__init__ = item_init  # type: ignore[method-assign]
    # Writes and reads share one lock: moto's reads iterate the very dicts writes change.
    for name in ("put_item", "update_item", "delete_item", "get_item", "query", "scan"):
        _ORIGINALS[name] = getattr(DynamoDBBackend, name)
        setattr(DynamoDBBackend, name, _locked(_ORIGINALS[name]))
    _ORIGINALS["serialized"] = DynamoHandler.serialized
    DynamoHandler.serialized = serialized  # type: ignore[method-assign,assignment]
    _ORIGINALS["table_scan"] = Table.scan
    Table.scan = table_scan  # type: ignore[method-assign]
    _ORIGINALS["transact_write_items"] = DynamoDBBackend.transact_write_items
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _ORIGINALS["queue_attributes"] = Queue.attributes
    Queue.attributes = property(queue_attributes)  # type: ignore[assignment,method-assign]


def restore() -> None:
    """Put moto's own methods back."""
    for name, method in _ORIGINALS.items():
        if name == "item_init":
            Item.__init__ = method  # type: ignore[method-assign]
        elif name == "parse":
            DynamoHandler.parse_parameters = method  # type: ignore[method-assign]
        elif name == "serialized":
            DynamoHandler.serialized = method  # type: ignore[method-assign]
        elif name == "table_scan":
            Table.scan = method  # type: ignore[method-assign]
        elif name == "queue_attributes":
            Queue.attributes = method  # type: ignore[method-assign]
        elif name == "filter":
            dynamodb_models.get_filter_expression = method
            dynamodb_table.get_filter_expression = method
        else:
            setattr(DynamoDBBackend, name, method)
    _ORIGINALS.clear()
