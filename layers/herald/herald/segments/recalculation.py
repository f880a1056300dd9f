"""Segment recalculation: one parallel-scan pass evaluates every target at once.

A run fixes its instant and its targets (every flexi segment and badge for the
nightly run; one new definition for a first fill), and splits the contacts
table into ``parts`` parallel-scan segments, one SQS message each. A worker
scans its part page by page: each raw item is read once, all targets are
evaluated on it, only the differences are written (see
:mod:`herald.store.segments`), then the part's checkpoint advances.

Crash safety: a page is written before its checkpoint, and every write is
conditional on the contact version that was evaluated, so a retried page
finds its changes already made and writes nothing; two overlapping runs
cannot both apply a change (the second one's condition fails, it re-reads the
contact, and finds nothing left to do). Counts of exclusions advance with the
checkpoint, so they are exact too.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import PutError, UpdateError
from pynamodb.expressions.update import Action

from herald import clock
from herald.errors import NotFound
from herald.segments.evaluation import EXCLUSION_REASONS, Target, evaluate, targets_of
from herald.segments.model import GroupType, State
from herald.store import segments as store
from herald.store.tables import ContactRecord, RunPartRecord, RunRecord, SegmentRecord
from herald.store.transactions import commit_units, is_condition_failure

RUN_ENTITY = "recalc-run"
PAGE_SIZE = 500
CONFLICT_RETRIES = 5
RUN_RETENTION_DAYS = 30
RUNNING, DONE = "Running", "Done"

Enqueue = Callable[[list[dict[str, Any]]], None]


@dataclass
class PartReport:
    """What one invocation did on one part."""

    scanned: int = 0
    changes: int = 0
    write_requests: int = 0
    rereads: int = 0
    finished: bool = False
    superseded: bool = False


def start_run(
    reason: str, enqueue: Enqueue, parts: int, targets: list[tuple[GroupType, str]] | None = None
) -> RunRecord:
    """Create a run and queue one message per scan part.

    ``targets`` None means the nightly run: every flexi segment and badge.
    """
    now = clock.now_iso()
    if targets is None:
        targets = [(GroupType(r.entity_type), r.entity_id) for r in store.flexi_records()]
    run_id = now.replace("-", "").replace(":", "").replace(".", "")[:15] + "-" + uuid.uuid4().hex[:8]
    run = RunRecord(
        entity_type=RUN_ENTITY,
        entity_id=run_id,
        reason=reason,
        at=now,
        targets={"items": [[t.value, i] for t, i in targets]},
        parts=parts,
        state=RUNNING,
        expires_at=int(clock.now().timestamp()) + RUN_RETENTION_DAYS * 86_400,
    )
    run.save()
    for part in range(parts):
        RunPartRecord(entity_type=_parts_key(run_id), entity_id=_part_id(part)).save()
    enqueue([{"run_id": run_id, "part": part} for part in range(parts)])
    return run


def process_part(run_id: str, part: int, has_time: Callable[[], bool] = lambda: True) -> PartReport:
    """Scan one part from its checkpoint until done or out of time (then the caller re-queues it)."""
    report = PartReport()
    run = RunRecord.get(RUN_ENTITY, run_id, consistent_read=True)
    checkpoint = RunPartRecord.get(_parts_key(run_id), _part_id(part), consistent_read=True)
    if checkpoint.done:
        report.finished = True
        finish_if_complete(run_id)  # an earlier delivery may have died between its checkpoint and here
        return report
    at = datetime.fromisoformat(run.at.replace("Z", "+00:00"))
    targets = _targets(run, at)
    if not targets:
        # Nothing to recalculate (no flexi definitions, or the target was deleted): no scan.
        checkpoint.done = True
        checkpoint.save()
        report.finished = True
        finish_if_complete(run_id)
        return report
    connection = ContactRecord._get_connection()
    while has_time():
        page = connection.scan(
            limit=PAGE_SIZE,
            segment=part,
            total_segments=int(run.parts),
            exclusive_start_key=checkpoint.cursor,  # type: ignore[arg-type]  # a raw key map
        )
        items = page.get("Items", [])
        excluded: Counter[str] = Counter()
        changes = [c for c in (evaluate(item, targets, excluded) for item in items) if c is not None]
        outcome = apply_changes(changes, targets, clock.now_iso())
        applied = outcome.changes
        report.scanned += len(items)
        report.changes += applied
        report.write_requests += outcome.requests
        report.rereads += outcome.rereads
        checkpoint.cursor = page.get("LastEvaluatedKey")
        checkpoint.scanned = int(checkpoint.scanned or 0) + len(items)
        checkpoint.changes = int(checkpoint.changes or 0) + applied
        merged = Counter(checkpoint.excluded or {})
        merged.update(excluded)
        checkpoint.excluded = dict(merged)
        checkpoint.done = checkpoint.cursor is None
        try:
            checkpoint.save()
        except PutError as exc:
            if is_condition_failure(exc):
                report.superseded = True  # another delivery of this part is ahead of us
                return report
            raise
        if checkpoint.done:
            report.finished = True
            finish_if_complete(run_id)
            return report
    return report


@dataclass
class Applied:
    """What committing a page's changes took: write requests, changes made, contacts re-read."""

    requests: int = 0
    changes: int = 0
    rereads: int = 0


def apply_changes(changes: list[store.MembershipChange], targets: list[Target], now: str) -> Applied:
    """Commit membership changes; a contact changed meanwhile is re-read and re-evaluated."""
    outcome = Applied()
    pending = changes
    for _ in range(CONFLICT_RETRIES):
        if not pending:
            break
        report = commit_units([store.change_unit(i, change, now) for i, change in enumerate(pending)])
        outcome.requests += report.requests
        retry: list[store.MembershipChange] = []
        for index, change in enumerate(pending):
            failure = report.failures.get(index)
            if failure is None:
                outcome.changes += change.count
                continue
            outcome.rereads += 1
            fresh = _reevaluate(change, failure.labels, targets)
            if fresh is not None:
                retry.append(fresh)
        pending = retry
    if pending:
        # Never checkpoint past changes that were not written: fail the part, SQS retries it.
        raise RuntimeError(f"{len(pending)} membership changes kept conflicting; the part will be retried")
    return outcome


def _reevaluate(
    change: store.MembershipChange, labels: list[str], targets: list[Target]
) -> store.MembershipChange | None:
    """After a failed unit: audiences already holding the contact are done; otherwise re-read."""
    audience_labels = {
        store.membership_label(t, i) for t, i in change.entered + change.exited if t is GroupType.AUDIENCE
    }
    if labels and set(labels) <= audience_labels:
        remaining = [(t, i) for t, i in change.entered if store.membership_label(t, i) not in labels]
        return (
            store.MembershipChange(
                change.contact_id,
                change.version,
                change.kind,
                change.status,
                change.segment_ids,
                change.badge_ids,
                remaining,
                change.exited,
            )
            if remaining or change.exited
            else None
        )
    gone = {label.removeprefix("counter:") for label in labels if label.startswith("counter:")}
    live = [t for t in targets if f"{t.type.value}:{t.id}" not in gone]
    item = ContactRecord._get_connection().get_item(change.contact_id, consistent_read=True).get("Item")
    if item is None:
        return None  # deleted meanwhile: nothing to do
    return evaluate(item, live)


def finish_if_complete(run_id: str) -> bool:
    """Close the run once every part is done: fills become Ready with their exclusion counts."""
    parts = list(RunPartRecord.query(_parts_key(run_id), consistent_read=True))
    if not parts or not all(p.done for p in parts):
        return False
    run = RunRecord.get(RUN_ENTITY, run_id, consistent_read=True)
    excluded: Counter[str] = Counter()
    for part in parts:
        excluded.update(part.excluded or {})
    now = clock.now_iso()
    for type_name, group_id in run.targets["items"]:
        record = store.get_record(GroupType(type_name), group_id)
        if record is None:
            continue
        if record.state != State.FILLING.value:
            continue  # a recalculated definition needs no bookkeeping write: a re-run writes nothing
        actions: list[Action] = [SegmentRecord.state.set(State.READY.value), SegmentRecord.last_run_id.set(run_id)]
        if record.entity_type == GroupType.AUDIENCE.value:
            totals = {reason: excluded.get(reason, 0) for reason in EXCLUSION_REASONS}
            actions.append(SegmentRecord.excluded.set(totals))
        try:
            record.update(
                actions=actions, condition=SegmentRecord.state == State.FILLING.value, add_version_condition=False
            )
        except UpdateError as exc:
            if not is_condition_failure(exc):
                raise
    try:
        run.update(
            actions=[RunRecord.state.set(DONE), RunRecord.finished_at.set(now)],
            condition=RunRecord.state == RUNNING,
        )
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
    return True


def run_status(run_id: str) -> dict[str, Any]:
    """A run's state, targets and per-part progress."""
    try:
        run = RunRecord.get(RUN_ENTITY, run_id, consistent_read=True)
    except RunRecord.DoesNotExist:
        raise NotFound(f"recalculation run {run_id} does not exist", id=run_id) from None
    parts = list(RunPartRecord.query(_parts_key(run_id), consistent_read=True))
    excluded: Counter[str] = Counter()
    for part in parts:
        excluded.update(part.excluded or {})
    return {
        "run_id": run_id,
        "reason": run.reason,
        "at": run.at,
        "state": run.state,
        "finished_at": run.finished_at,
        "targets": [{"type": t, "id": i} for t, i in run.targets["items"]],
        "parts": int(run.parts),
        "parts_done": sum(1 for p in parts if p.done),
        "scanned": sum(int(p.scanned or 0) for p in parts),
        "changes": sum(int(p.changes or 0) for p in parts),
        "excluded": dict(excluded),
    }


def _targets(run: RunRecord, at: datetime) -> list[Target]:
    keys = [(t, i) for t, i in run.targets["items"]]
    records = list(SegmentRecord.batch_get(keys)) if keys else []
    return targets_of(records, at)


def _parts_key(run_id: str) -> str:
    return f"{RUN_ENTITY}#{run_id}"


def _part_id(part: int) -> str:
    return f"{part:04d}"
