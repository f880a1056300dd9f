"""Entry: contacts join an active flow when they join one of its segments.

Two ways in, both through :func:`admit`:

- the memberships table's stream (``FlowEntryFunction``): the nightly pass's
  enter events and online recalculation both write a membership item, and its
  INSERT admits the contact to every active flow that targets the segment;
- activation and resume (:func:`admit_current_members`): everyone already in
  the flow's segments.

A contact has at most one active run per flow: the run item is written with a
condition (absent, or the run read before — ended — unchanged). A contact whose
run ended may enter again only when the flow's reset period allows it (seed
004: all final results, conversions only, or dismisses only), counted from the
end of the run. Entrants of one window share a cohort (:mod:`herald.flows.cohorts`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from herald.campaigns.model import local_moment
from herald.clock import to_iso
from herald.flows import cohorts
from herald.flows.model import FlowStatus, ResetInteractions, ResetPeriod
from herald.observability import logger
from herald.segments.model import GroupType
from herald.store import flows as store
from herald.store import segments as segment_store
from herald.store.tables import CohortMemberRecord, FlowRecord, FlowRunRecord, MembershipRecord, ResetDueRecord
from herald.store.transactions import Operation, Unit, commit_units

ADMIT_CHUNK = 100
RESET_DUE = "flowreset#due"
# Members read and admitted between two deadline checks of a whole-segment admission.
ADMISSION_BATCH = 1000
# A run's final result, as the reset period's "interactions" name it.
_RESETTABLE = {
    ResetInteractions.ALL: {store.COMPLETED, store.CONVERTED, store.LEFT},
    ResetInteractions.CONVERSIONS: {store.CONVERTED},
    ResetInteractions.DISMISSES: {store.LEFT},
}


@dataclass
class EntryReport:
    admitted: int = 0
    already_in: int = 0
    not_again: int = 0
    closed: int = 0
    cohorts: set[str] = field(default_factory=set)


def is_open(flow: FlowRecord, now: datetime) -> bool:
    """Active, and between its start and end in its time zone."""
    if flow.status != FlowStatus.ACTIVE.value:
        return False
    settings = flow.spec["settings"]
    zone = settings.get("time_zone") or "UTC"
    start = local_moment(settings.get("start"), zone)
    end = local_moment(settings.get("end"), zone)
    return (start is None or start <= now) and (end is None or now < end)


def may_enter_again(run: FlowRunRecord, reset: dict[str, Any] | None, now: datetime) -> bool:
    """Whether a contact whose run ended may start a new one now (the flow's reset period)."""
    if run.state == store.ACTIVE or not reset:
        return False
    period = ResetPeriod.model_validate(reset)
    if run.state not in _RESETTABLE[period.interactions]:
        return False
    ended = datetime.fromisoformat(str(run.exited_at or run.enrolled_at).replace("Z", "+00:00"))
    return now - ended >= timedelta(days=period.days())


def reset_due_at(settings: dict[str, Any], outcome: str, ended: datetime) -> datetime | None:
    """When a run that ended with ``outcome`` may be followed by a new one (None: never)."""
    reset = settings.get("reset")
    if not reset:
        return None
    period = ResetPeriod.model_validate(reset)
    if outcome not in _RESETTABLE[period.interactions]:
        return None
    return ended + timedelta(days=period.days())


def owe_reset(flow_id: str, contact_id: str, settings: dict[str, Any], outcome: str, ended: datetime) -> None:
    """Remember to let the contact enter again when the reset period ends (a keyed put: once)."""
    due = reset_due_at(settings, outcome, ended)
    if due is not None:
        key = f"{to_iso(due)}#{flow_id}#{contact_id}"
        ResetDueRecord(RESET_DUE, key, flow_id=flow_id, contact_id=contact_id).save()


def readmit_due(now: datetime, deadline: float | None = None) -> int:
    """The tick: contacts whose reset period ended enter again if they are still in the flow's segments."""
    readmitted = 0
    due = ResetDueRecord.query(RESET_DUE, ResetDueRecord.entity_id <= to_iso(now) + "~", limit=ADMISSION_BATCH)
    by_flow: dict[str, list[ResetDueRecord]] = defaultdict(list)
    for record in due:
        by_flow[record.flow_id].append(record)
    for flow_id, records in by_flow.items():
        flow = store.get(flow_id)
        if flow is not None and is_open(flow, now):
            keys = [
                (segment_store.membership_key(GroupType.SEGMENT, segment), r.contact_id)
                for segment in flow.spec["settings"]["segments"]
                for r in records
            ]
            members = {m.contact_id for m in MembershipRecord.batch_get(keys)}
            readmitted += admit(flow, [r.contact_id for r in records if r.contact_id in members], now).admitted
        with ResetDueRecord.batch_write() as batch:
            for record in records:
                batch.delete(record)
        if deadline is not None and time.monotonic() > deadline:
            break
    return readmitted


def admit(flow: FlowRecord, contact_ids: Iterable[str], now: datetime) -> EntryReport:
    """Start a run for each contact who may enter; the rest are counted, never an error."""
    report = EntryReport()
    ids = list(dict.fromkeys(contact_ids))
    if not is_open(flow, now):
        report.closed = len(ids)
        return report
    for start in range(0, len(ids), ADMIT_CHUNK):
        _admit_chunk(flow, ids[start : start + ADMIT_CHUNK], now, report)
    return report


def _admit_chunk(flow: FlowRecord, ids: list[str], now: datetime, report: EntryReport) -> None:
    version = int(flow.current_version)
    cohort_id, marker = cohorts.entry_cohort(flow.entity_id, version, now)
    existing = store.runs(flow.entity_id, ids)
    reset = flow.spec["settings"].get("reset")
    units: list[Unit] = []
    for contact_id in ids:
        previous = existing.get(contact_id)
        if previous is not None and previous.state == store.ACTIVE:
            report.already_in += 1
            continue
        if previous is not None and not may_enter_again(previous, reset, now):
            report.not_again += 1
            continue
        units.append(_entry_unit(flow.entity_id, version, cohort_id, contact_id, previous, now))
    if not units:
        return
    # The marker first: a crash after the members were written must still leave their cohort to start.
    cohorts.mark_pending(flow.entity_id, version, marker, cohort_id)
    report.cohorts.add(cohort_id)
    outcome = commit_units(units)
    for index, unit in enumerate(units):
        if index in outcome.failures:
            report.already_in += 1  # a racing entry won the condition
        else:
            report.admitted += 1
            logger.debug("flow entry", extra={"flow_id": flow.entity_id, "contact_id": unit.tag})


def _entry_unit(
    flow_id: str, version: int, cohort_id: str, contact_id: str, previous: FlowRunRecord | None, now: datetime
) -> Unit:
    occurrence = str(int(previous.occurrence) + 1) if previous is not None else "1"
    run = FlowRunRecord(
        store.run_key(flow_id),
        contact_id,
        state=store.ACTIVE,
        occurrence=occurrence,
        occurrences=int(occurrence),
        enrolled_at=to_iso(now),
        cohort=cohort_id,
        flow_version=version,
    )
    if previous is None:
        condition = FlowRunRecord.contact_id.does_not_exist()
    else:
        condition = (FlowRunRecord.occurrence == previous.occurrence) & (FlowRunRecord.state == previous.state)
    member = CohortMemberRecord(store.cohort_key(cohort_id), contact_id, occurrence=occurrence)
    return Unit(
        contact_id,
        [
            Operation("put", run, f"run#{contact_id}", condition, versioned=False),
            Operation("put", member, f"member#{contact_id}", versioned=False),
        ],
    )


def admit_current_members(flow_id: str, now: datetime, deadline: float | None = None) -> int:
    """Admit every current member of the flow's segments; returns how many entered.

    Called on activation, resume and an edit that adds segments (which clear
    ``members_admitted_at``), and by the tick for any flow still owing it. It
    stops at ``deadline`` (``time.monotonic()``) and leaves a cursor for the tick
    to go on from, so a big segment never times a request out and nobody is
    skipped. A flow whose start is ahead admits nobody yet.
    """
    flow = store.get(flow_id)
    if flow is None or not is_open(flow, now):
        return 0
    cursor = dict(flow.admission_cursor or {})
    segments = list(flow.spec["settings"]["segments"])
    admitted = 0
    for index in range(int(cursor.get("segment") or 0), len(segments)):
        key = segment_store.membership_key(GroupType.SEGMENT, segments[index])
        after = cursor.get("after") if index == int(cursor.get("segment") or 0) else None
        start = {"group_key": {"S": key}, "contact_id": {"S": after}} if after else None
        batch: list[str] = []
        for membership in MembershipRecord.query(key, last_evaluated_key=start):
            batch.append(membership.contact_id)
            if len(batch) < ADMISSION_BATCH:
                continue
            admitted += admit(flow, batch, now).admitted
            if deadline is not None and time.monotonic() > deadline:
                store.save_admission_cursor(flow_id, index, batch[-1])
                return admitted
            batch = []
        if batch:
            admitted += admit(flow, batch, now).admitted
    store.mark_members_admitted(flow_id, to_iso(now))
    return admitted


def admit_owed(now: datetime, deadline: float | None = None) -> list[str]:
    """The tick: admit the members of active flows still owing it (a start that has come, an
    admission a request left unfinished, segments added by an edit)."""
    owed: list[str] = []
    for flow in store.active_flows():
        if flow.members_admitted_at is None and is_open(flow, now):
            admit_current_members(flow.entity_id, now, deadline)
            owed.append(flow.entity_id)
            if deadline is not None and time.monotonic() > deadline:
                break
    return owed


def on_memberships(entered: list[tuple[str, str]], now: datetime) -> EntryReport:
    """Admit contacts who just joined segments (``(segment_id, contact_id)`` pairs) to the flows targeting them."""
    by_segment: dict[str, list[str]] = defaultdict(list)
    for segment_id, contact_id in entered:
        by_segment[segment_id].append(contact_id)
    total = EntryReport()
    for flow in store.active_flows():
        wanted = [c for s in flow.spec["settings"]["segments"] for c in by_segment.get(s, [])]
        if not wanted:
            continue
        report = admit(flow, wanted, now)
        total.admitted += report.admitted
        total.already_in += report.already_in
        total.not_again += report.not_again
        total.closed += report.closed
        total.cohorts |= report.cohorts
    return total
