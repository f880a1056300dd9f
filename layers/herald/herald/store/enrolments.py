"""Enrolments: who is in which campaign, written exactly once, read cheaply.

- The **enrolment item** (``program_key = campaign#<id>, contact_id``) is the
  authority. New enrolments are conditional puts, re-enrolments and trigger
  occurrences conditional updates, packed up to 99 to a ``TransactWriteItems``
  request together with an **outbox** item holding their deliveries. A
  cancelled request names the items whose condition failed (someone else
  enrolled them first); they are dropped and the rest retried. So overlapping
  or retried ticks never enrol anyone twice, and no delivery is lost between
  the write and the queue: the outbox item is deleted only after its
  deliveries are queued, and the next tick re-queues any left behind.
- The **roster** is a compact index of a campaign's active enrolments: a few
  hundred bucket items holding id sets, so a tick learns who is already in
  without reading one item per enrolled contact. It is written after the
  enrolments; when a crash leaves it behind, the next tick's conditions fail
  for the contacts it missed and it is repaired.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import PutError, TransactWriteError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from herald.store.tables import (
    EnrolmentRecord,
    FiredRecord,
    LeaseRecord,
    OutboxRecord,
    RosterRecord,
)
from herald.store.transactions import (
    CONFLICT_RETRIES,
    MAX_TRANSACTION_ITEMS,
    Operation,
    add_operation,
    default_connection,
    is_condition_failure,
    is_transient,
    labels_in_wire_order,
)

ROSTER_BUCKETS = 256
TREATED = "treated"
OUTBOX = "outbox"
ACTIVE = "active"
EXITED = "exited"
# One outbox item rides in each enrolment transaction.
ENROLMENTS_PER_TRANSACTION = MAX_TRANSACTION_ITEMS - 1


def program_key(campaign_id: str) -> str:
    return f"campaign#{campaign_id}"


def roster_key(name: str) -> str:
    """``roster#campaign#<id>`` for a campaign, ``roster#treated`` for everyone who ever exited one."""
    return f"roster#{name}"


def bucket_of(contact_id: str) -> str:
    return f"{zlib.crc32(contact_id.encode()) % ROSTER_BUCKETS:03d}"


# --------------------------------------------------------------------------
# Rosters
# --------------------------------------------------------------------------


def read_roster(name: str, reads: Any = None) -> set[str]:
    """Every id in a roster (a Query over its bucket items; buckets exist only once used).

    ``reads`` (a ``ReadCount``) is charged the bucket items read.
    """
    ids: set[str] = set()
    results = RosterRecord.query(roster_key(name), consistent_read=True)
    for record in results:
        ids |= set(record.ids or ())
    if reads is not None:
        reads.items += results.total_count
    return ids


@dataclass
class RosterChanges:
    """Additions and removals to flush to a roster, bucket by bucket."""

    added: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    removed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, contact_ids: Iterable[str]) -> None:
        for contact_id in contact_ids:
            self.added[bucket_of(contact_id)].add(contact_id)

    def remove(self, contact_ids: Iterable[str]) -> None:
        for contact_id in contact_ids:
            self.removed[bucket_of(contact_id)].add(contact_id)

    def __bool__(self) -> bool:
        return any(self.added.values()) or any(self.removed.values())


def flush_roster(name: str, changes: RosterChanges) -> int:
    """Apply the changes, one UpdateItem per touched bucket (set ADD/DELETE are idempotent)."""
    writes = 0
    for bucket in sorted(set(changes.added) | set(changes.removed)):
        added = changes.added.get(bucket) or set()
        removed = (changes.removed.get(bucket) or set()) - added
        actions: list[Action] = []
        if added:
            actions.append(RosterRecord.ids.add(added))
        if removed:
            actions.append(RosterRecord.ids.delete(removed))
        if actions:
            RosterRecord(roster_key(name), bucket).update(actions=actions)
            writes += 1
    changes.added.clear()
    changes.removed.clear()
    return writes


# --------------------------------------------------------------------------
# Enrolment transactions
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """One contact entering a campaign for one occurrence.

    ``previous`` is the occurrence being replaced (a trigger's earlier
    occurrence), or any marker with ``reenrol`` for a re-enrolment of an exited
    contact; None for a first enrolment.
    """

    contact_id: str
    occurrence: str
    previous: str | None = None
    reenrol: bool = False
    # Event triggers: also record that this occurrence fired (a marker item, once ever).
    mark_fired: bool = False


@dataclass
class EnrolReport:
    """What one batch of enrolments did."""

    enrolled: list[Enrolment] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    requests: int = 0
    outbox_ids: list[str] = field(default_factory=list)
    sends: list[dict[str, Any]] = field(default_factory=list)


def enrol(campaign_id: str, enrolments: list[Enrolment], sends_of: Any, batch_prefix: str, now: str) -> EnrolReport:
    """Enrol contacts exactly once, 99 to a transaction with their outbox item.

    ``sends_of(enrolled)`` gives the outbox payload (a JSON-ready list) for the
    enrolments that are committed together.
    """
    report = EnrolReport()
    for start in range(0, len(enrolments), ENROLMENTS_PER_TRANSACTION):
        chunk = enrolments[start : start + ENROLMENTS_PER_TRANSACTION]
        outbox_id = f"{batch_prefix}#{start // ENROLMENTS_PER_TRANSACTION:06d}"
        _enrol_chunk(campaign_id, chunk, sends_of, outbox_id, now, report)
    return report


def _enrol_chunk(
    campaign_id: str, chunk: list[Enrolment], sends_of: Any, outbox_id: str, now: str, report: EnrolReport
) -> None:
    pending = list(chunk)
    attempt = 0
    while pending:
        operations = [_enrolment_operation(campaign_id, e, now) for e in pending]
        operations += [_fired_operation(campaign_id, e, now) for e in pending if e.mark_fired]
        payload = sends_of(pending)
        outbox = OutboxRecord(OUTBOX, outbox_id, sends=json.dumps(payload), created_at=now)
        operations.append(Operation("put", outbox, "outbox", versioned=False))
        labels = labels_in_wire_order(operations)
        # The same request retried by botocore after a lost response is recognised by
        # DynamoDB (for 10 minutes) and answered as the success it was.
        token = hashlib.sha256("|".join([outbox_id, *labels]).encode()).hexdigest()[:36]
        try:
            report.requests += 1
            with TransactWrite(connection=default_connection(), client_request_token=token) as transaction:
                for op in operations:
                    add_operation(transaction, op)
        except TransactWriteError as exc:
            codes = [reason.code if reason else None for reason in (exc.cancellation_reasons or [])]
            taken = {labels[i] for i, code in enumerate(codes) if code == "ConditionalCheckFailed"}
            if taken:
                report.already += sorted(taken)
                pending = [e for e in pending if e.contact_id not in taken]
                continue
            if (any(c in ("TransactionConflict", "ThrottlingError") for c in codes) or is_transient(exc)) and (
                attempt < CONFLICT_RETRIES
            ):
                attempt += 1
                time.sleep(min(0.05 * 2**attempt, 1.0))
                continue
            raise
        report.enrolled += pending
        report.outbox_ids.append(outbox_id)
        report.sends += payload
        return


def _enrolment_operation(campaign_id: str, enrolment: Enrolment, now: str) -> Operation:
    key = program_key(campaign_id)
    if enrolment.previous is None:
        record = EnrolmentRecord(
            key, enrolment.contact_id, state=ACTIVE, occurrence=enrolment.occurrence, occurrences=1, enrolled_at=now
        )
        new = EnrolmentRecord.contact_id.does_not_exist()
        return Operation("put", record, enrolment.contact_id, condition=new, versioned=False)
    record = EnrolmentRecord(key, enrolment.contact_id)
    condition: Condition
    if enrolment.reenrol:
        # Re-engagement: only an exited enrolment may start again (once: it is active after).
        condition = EnrolmentRecord.state == EXITED
    else:
        # A trigger's next occurrence: anything but this same occurrence again.
        condition = EnrolmentRecord.contact_id.does_not_exist() | (EnrolmentRecord.occurrence != enrolment.occurrence)
    actions: list[Action] = [
        EnrolmentRecord.state.set(ACTIVE),
        EnrolmentRecord.occurrence.set(enrolment.occurrence),
        EnrolmentRecord.occurrences.add(1),
        EnrolmentRecord.enrolled_at.set(now),
        EnrolmentRecord.exited_at.remove(),
        EnrolmentRecord.exit_reason.remove(),
    ]
    return Operation("update", record, enrolment.contact_id, condition=condition, actions=actions, versioned=False)


def _fired_operation(campaign_id: str, enrolment: Enrolment, now: str) -> Operation:
    marker = FiredRecord(f"fired#{program_key(campaign_id)}", f"{enrolment.contact_id}#{enrolment.occurrence}", at=now)
    # Labelled with the contact, like its enrolment: either condition failing means "taken".
    return Operation(
        "put", marker, enrolment.contact_id, condition=FiredRecord.entity_id.does_not_exist(), versioned=False
    )


def exit_contacts(campaign_id: str, contact_ids: list[str], reason: str, now: str) -> tuple[list[str], int]:
    """Mark active enrolments exited (100 to a transaction); returns those exited and requests sent."""
    exited: list[str] = []
    requests = 0
    key = program_key(campaign_id)
    for start in range(0, len(contact_ids), MAX_TRANSACTION_ITEMS):
        pending = contact_ids[start : start + MAX_TRANSACTION_ITEMS]
        attempt = 0
        while pending:
            operations = [
                Operation(
                    "update",
                    EnrolmentRecord(key, contact_id),
                    contact_id,
                    condition=EnrolmentRecord.state == ACTIVE,
                    actions=[
                        EnrolmentRecord.state.set(EXITED),
                        EnrolmentRecord.exited_at.set(now),
                        EnrolmentRecord.exit_reason.set(reason),
                    ],
                    versioned=False,
                )
                for contact_id in pending
            ]
            try:
                requests += 1
                with TransactWrite(connection=default_connection()) as transaction:
                    for op in operations:
                        add_operation(transaction, op)
            except TransactWriteError as exc:
                codes = [r.code if r else None for r in (exc.cancellation_reasons or [])]
                gone = {pending[i] for i, code in enumerate(codes) if code == "ConditionalCheckFailed"}
                if gone:
                    pending = [c for c in pending if c not in gone]
                    continue
                if attempt < CONFLICT_RETRIES and (any(c == "TransactionConflict" for c in codes) or is_transient(exc)):
                    attempt += 1
                    time.sleep(min(0.05 * 2**attempt, 1.0))
                    continue
                raise
            exited += pending
            break
    return exited, requests


def get(campaign_id: str, contact_id: str) -> EnrolmentRecord | None:
    try:
        return EnrolmentRecord.get(program_key(campaign_id), contact_id, consistent_read=True)
    except EnrolmentRecord.DoesNotExist:
        return None


def batch_get(campaign_id: str, contact_ids: Iterable[str]) -> dict[str, EnrolmentRecord]:
    key = program_key(campaign_id)
    return {r.contact_id: r for r in EnrolmentRecord.batch_get([(key, c) for c in contact_ids])}


def ever_enrolled(campaign_id: str) -> bool:
    """True if any contact was ever enrolled under this campaign id."""
    return any(True for _ in EnrolmentRecord.query(program_key(campaign_id), limit=1, attributes_to_get=["contact_id"]))


def of_contact(contact_id: str) -> list[EnrolmentRecord]:
    """Every campaign enrolment of one contact (``ContactProgramsIndex``)."""
    return list(
        EnrolmentRecord.contact_programs_index.query(contact_id, EnrolmentRecord.program_key.startswith("campaign#"))
    )


# --------------------------------------------------------------------------
# Outbox and lease
# --------------------------------------------------------------------------


def pending_outbox() -> list[OutboxRecord]:
    """Deliveries committed with their enrolments but not yet queued (oldest first)."""
    return list(OutboxRecord.query(OUTBOX, consistent_read=True))


def outbox_sends(record: OutboxRecord) -> list[dict[str, Any]]:
    sends: list[dict[str, Any]] = json.loads(record.sends)
    return sends


def delete_outbox(outbox_ids: Iterable[str]) -> None:
    with OutboxRecord.batch_write() as batch:
        for outbox_id in dict.fromkeys(outbox_ids):
            batch.delete(OutboxRecord(OUTBOX, outbox_id))


def take_lease(name: str, holder: str, seconds: int) -> bool:
    """Hold ``name`` for ``seconds`` unless someone else holds it now."""
    now = time.time()
    lease = LeaseRecord("lease", name, holder=holder, until=now + seconds)
    try:
        lease.save(condition=LeaseRecord.entity_id.does_not_exist() | (LeaseRecord.until < now))
    except PutError as exc:
        if is_condition_failure(exc):
            return False
        raise
    return True


def release_lease(name: str, holder: str) -> None:
    try:
        LeaseRecord("lease", name).delete(condition=LeaseRecord.holder == holder)
    except Exception as exc:
        if not is_condition_failure(exc):
            raise
