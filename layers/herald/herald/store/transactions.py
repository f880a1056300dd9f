"""Labelled DynamoDB transactions, packed many changes to a request.

Every change to a contact touches several items (the contact, its unique
keys, its memberships, group counters) that must change together, so each
change is one all-or-nothing unit. Bulk operations pack many units into one
``TransactWriteItems`` request (up to 100 items), which keeps writes per
contact far below one request while keeping every conditional check. When a
packed request is cancelled, its units are retried one by one so a single
bad unit cannot sink its neighbours, and the cancellation reason of a lone
unit says exactly which item's condition failed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from herald.errors import Conflict

MAX_TRANSACTION_ITEMS = 100
CONFLICT_RETRIES = 6

_connections: dict[str, Connection] = {}
_connections_lock = threading.Lock()


def default_connection() -> Connection:
    """One connection (one botocore client) per region for the process, as a container keeps it."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    key = f"{region}|{endpoint}"
    with _connections_lock:
        if key not in _connections:
            _connections[key] = Connection(region=region)
        return _connections[key]


@dataclass
class Operation:
    """One item write inside a unit: ``put``, ``delete`` or ``update``."""

    verb: str
    model: Model
    label: str
    condition: Condition | None = None
    actions: list[Action] = field(default_factory=list)
    # Version conditions are pynamodb's optimistic locking; counters opt out.
    versioned: bool = True

    @property
    def item_key(self) -> tuple[str, Any, Any]:
        """Identifies the item, since a transaction may touch each item once."""
        hash_value, range_value = self.model._get_hash_range_key_serialized_values()
        return (self.model.Meta.table_name, repr(hash_value), repr(range_value))


@dataclass
class CounterDelta:
    """A signed change to a counter on a shared item (group member counts).

    Deltas on the same item from several units in one request are summed into
    a single update, because a transaction may touch an item only once.
    ``build(total, guarded)`` makes that update; ``guarded`` is true when any
    unit's delta was positive, so the item's guard (a group must be Ready to
    gain members) holds even when the deltas cancel out.
    """

    key: str
    build: Callable[[int, bool], Operation]
    delta: int


@dataclass
class Unit:
    """An all-or-nothing change; ``tag`` lets the caller find its outcome."""

    tag: Any
    operations: list[Operation]
    counters: list[CounterDelta] = field(default_factory=list)

    def size(self) -> int:
        return len(self.operations) + len(self.counters)


@dataclass
class Failure:
    """Why a unit did not commit: the labels whose conditions failed."""

    labels: list[str]
    message: str


@dataclass
class CommitReport:
    """What a commit did: per-unit failures and the requests it sent."""

    failures: dict[int, Failure] = field(default_factory=dict)
    requests: int = 0


# Labels of failures that are not a condition on a named item.
TOO_LARGE = "too_large"
INVALID_PREFIX = "invalid:"
CONFLICT = "conflict"


def is_condition_failure(exc: Exception) -> bool:
    """True if a single-item write was refused by its condition (not an infrastructure error)."""
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def save_new(record: Any, what: str) -> None:
    """Put a catalog definition only if its key is free; a taken id is a 409 naming it."""
    try:
        record.save(condition=type(record).entity_id.does_not_exist())
    except PutError as exc:
        if is_condition_failure(exc):
            raise Conflict(f"{what} {record.entity_id} already exists", id=record.entity_id) from exc
        raise


def commit_units(units: Sequence[Unit], connection: Connection | None = None) -> CommitReport:
    """Commit units in packed transactions; return failures by unit index.

    A unit whose own condition fails, whose data DynamoDB refuses, or that is
    larger than one transaction, is reported, never raised; transient
    conflicts with concurrent transactions are retried with backoff. Only
    infrastructure errors (the service unreachable, throttled past retries)
    raise, and then no later chunk is attempted.
    """
    report = CommitReport()
    fitting: list[tuple[int, Unit]] = []
    for index, unit in enumerate(units):
        if unit.size() > MAX_TRANSACTION_ITEMS:
            report.failures[index] = Failure([TOO_LARGE], f"one change may touch at most {MAX_TRANSACTION_ITEMS} items")
        else:
            fitting.append((index, unit))
    for chunk in _pack(fitting):
        failed = _commit_chunk(chunk, connection, report)
        if failed is None:
            continue
        if len(chunk) == 1:
            report.failures[chunk[0][0]] = failed
            continue
        for index, unit in chunk:  # isolate the unit(s) at fault
            alone = _commit_chunk([(index, unit)], connection, report)
            if alone is not None:
                report.failures[index] = alone
    return report


def _pack(indexed: list[tuple[int, Unit]]) -> list[list[tuple[int, Unit]]]:
    chunks: list[list[tuple[int, Unit]]] = []
    current: list[tuple[int, Unit]] = []
    items: set[tuple[str, Any, Any]] = set()
    counters: set[str] = set()
    for index, unit in indexed:
        unit_items = {op.item_key for op in unit.operations}
        new_counters = {c.key for c in unit.counters} - counters
        overflow = len(items) + len(counters) + len(unit_items) + len(new_counters) > MAX_TRANSACTION_ITEMS
        if current and (overflow or unit_items & items):
            chunks.append(current)
            current, items, counters = [], set(), set()
        current.append((index, unit))
        items |= unit_items
        counters |= {c.key for c in unit.counters}
    if current:
        chunks.append(current)
    return chunks


def _commit_chunk(chunk: list[tuple[int, Unit]], connection: Connection | None, report: CommitReport) -> Failure | None:
    for attempt in range(CONFLICT_RETRIES):
        operations = [op for _, unit in chunk for op in unit.operations]
        operations += _merged_counters([unit for _, unit in chunk])
        labels = labels_in_wire_order(operations)
        try:
            report.requests += 1
            with TransactWrite(connection=connection or default_connection()) as transaction:
                for op in operations:
                    add_operation(transaction, op)
            return None
        except TransactWriteError as exc:
            reasons = exc.cancellation_reasons or []
            codes = [reason.code if reason else None for reason in reasons]
            failed = [labels[i] for i, code in enumerate(codes) if code == "ConditionalCheckFailed" and i < len(labels)]
            if failed:
                return Failure(failed, "a condition failed: " + ", ".join(failed))
            if any(code in ("TransactionConflict", "ThrottlingError") for code in codes) or is_transient(exc):
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            refused = [labels[i] for i, code in enumerate(codes) if code == "ValidationError" and i < len(labels)]
            if refused or getattr(exc, "cause_response_code", None) == "ValidationException":
                message = getattr(exc, "cause_response_message", None) or str(exc)
                return Failure([INVALID_PREFIX + label for label in refused] or [INVALID_PREFIX], message)
            raise
    return Failure([CONFLICT], "too many concurrent changes to the same items; retry later")


def is_transient(exc: TransactWriteError) -> bool:
    code = getattr(exc, "cause_response_code", None)
    return code in ("TransactionInProgressException", "ThrottlingException", "ProvisionedThroughputExceededException")


def _merged_counters(units: list[Unit]) -> list[Operation]:
    """One update per counter item, with the guard kept if any unit's change was positive."""
    totals: dict[str, int] = {}
    guarded: dict[str, bool] = {}
    builders: dict[str, Callable[[int, bool], Operation]] = {}
    for unit in units:
        for counter in unit.counters:
            totals[counter.key] = totals.get(counter.key, 0) + counter.delta
            guarded[counter.key] = guarded.get(counter.key, False) or counter.delta > 0
            builders[counter.key] = counter.build
    return [builders[key](total, guarded[key]) for key, total in totals.items() if total != 0 or guarded[key]]


def labels_in_wire_order(operations: list[Operation]) -> list[str]:
    # pynamodb sends condition checks, then deletes, then puts, then updates.
    order = ("delete", "put", "update")
    return [op.label for verb in order for op in operations if op.verb == verb]


def add_operation(transaction: TransactWrite, op: Operation) -> None:
    if op.verb == "put":
        transaction.save(op.model, condition=op.condition)
    elif op.verb == "delete":
        transaction.delete(op.model, condition=op.condition, add_version_condition=op.versioned)
    elif op.verb == "update":
        # A copy: pynamodb appends its version increment to the list it is given, and a
        # retried chunk would otherwise send the increment twice.
        transaction.update(op.model, list(op.actions), condition=op.condition, add_version_condition=op.versioned)
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown verb {op.verb}")
