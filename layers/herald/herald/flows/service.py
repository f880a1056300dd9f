"""Flows: define, version, activate, pause, resume, stop, and report per step (seed 004, issue 6).

Every saved edit is a new immutable version (``flowversion#<id>`` / ``<n>``);
the flow record carries the current one, which new entrants start on, while
contacts already walking the flow stay on the version they entered with.
Status changes are conditional on the status they start from, so of two
racing calls one wins and the other is told why not.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pynamodb.exceptions import DeleteError, PutError

from herald import clock
from herald.campaigns.model import local_moment
from herald.cursor import decode_cursor, encode_cursor
from herald.errors import Conflict, NotFound, StaleVersion, ValidationFailed, located_problems
from herald.flows import entry
from herald.flows.definition import CrossCampaignStep, FlowGraph, SegmentStep
from herald.flows.model import Flow, FlowIn, FlowPatch, FlowStatus, default_time_zone
from herald.segments.model import GroupType
from herald.store import campaigns as campaign_store
from herald.store import contacts as contact_store
from herald.store import flows as store
from herald.store import segments as segment_store
from herald.store.tables import FLOW_ENTITY, LIVE_FLOW, FlowRecord, FlowVersionRecord
from herald.store.transactions import Operation, Unit, commit_units, is_condition_failure

FLOW_LABEL = "flow"
VERSION_LABEL = "flow_version"
DELETABLE = (FlowStatus.DRAFT, FlowStatus.STOPPED)
# How long activation, resume or an edit admits members itself (the API answers within 30 s).
ADMIT_SECONDS = 15

# --------------------------------------------------------------------------
# Definitions and versions
# --------------------------------------------------------------------------


def create(data: FlowIn) -> Flow:
    """A new Draft flow and its version 1, written together."""
    data = _with_time_zone(data)
    _check_references(data)
    now = clock.now_iso()
    spec = _spec(data)
    record = FlowRecord(
        FLOW_ENTITY,
        uuid.uuid4().hex[:16],
        name=data.name,
        status=FlowStatus.DRAFT.value,
        current_version=1,
        spec=spec,
        created_at=now,
        updated_at=now,
    )
    new = Operation("put", record, FLOW_LABEL, condition=FlowRecord.entity_id.does_not_exist())
    _commit(record, new, _version(record.entity_id, 1, spec, now))
    return to_flow(record)


def get(flow_id: str) -> Flow:
    return to_flow(_record(flow_id))


def list_flows(cursor: str | None, limit: int) -> tuple[list[Flow], str | None]:
    """A page of flows in id order; the cursor resumes after the last one."""
    state = decode_cursor(cursor, "flows")

    def page(last_key: dict[str, Any] | None, size: int) -> Any:
        return FlowRecord.query(FLOW_ENTITY, limit=size, last_evaluated_key=last_key)

    records, next_state = contact_store.query_pages([page], state, limit)
    return [to_flow(r) for r in records], encode_cursor(next_state, "flows")


def update(flow_id: str, patch: FlowPatch, if_match: int | None = None) -> Flow:
    """Merge the patch over the current version and save the result as the next version.

    An active flow may be edited: contacts already in it finish on their
    version, new entrants take the new one. A stopped flow is final.
    """
    record = _record(flow_id)
    if if_match is not None and if_match != int(record.version or 0):
        raise StaleVersion(FLOW_ENTITY, flow_id, int(record.version or 0))
    if record.status == FlowStatus.STOPPED:
        raise Conflict("a stopped flow is final; create a new flow instead", status=record.status)
    merged = {
        **record.spec["settings"],
        "graph": record.spec["graph"],
        **patch.model_dump(mode="json", exclude_unset=True),
    }
    try:
        data = _with_time_zone(FlowIn.model_validate(merged))
    except ValidationError as exc:
        raise ValidationFailed(_problems(exc)) from exc
    _check_references(data)
    number = int(record.current_version) + 1
    if set(data.segments) - set(record.spec["settings"]["segments"]):
        _owe_admission(record)  # the added segments' current members enter too
    record.spec = _spec(data)
    record.name = data.name
    record.current_version = number
    record.updated_at = clock.now_iso()
    changed = Operation("put", record, FLOW_LABEL, condition=FlowRecord.status != FlowStatus.STOPPED.value)
    _commit(record, changed, _version(flow_id, number, record.spec, record.updated_at))
    if record.members_admitted_at is None and record.status == FlowStatus.ACTIVE:
        _admit(flow_id, clock.now())
    return to_flow(record)


def versions(flow_id: str) -> list[dict[str, Any]]:
    """Every version of the flow, oldest first, as it was saved."""
    _record(flow_id)
    return [
        {
            "version": int(v.entity_id),
            "created_at": v.created_at,
            "settings": v.spec["settings"],
            "graph": v.spec["graph"],
        }
        for v in store.versions(flow_id)
    ]


def delete(flow_id: str) -> None:
    """Delete a Draft or Stopped flow and its versions (an active or paused one must stop first)."""
    record = _record(flow_id)
    if record.status not in DELETABLE:
        raise Conflict(
            f"only a draft or stopped flow can be deleted; this one is {record.status}", status=record.status
        )
    try:
        record.delete(condition=FlowRecord.status.is_in(*[s.value for s in DELETABLE]))
    except DeleteError as exc:
        if is_condition_failure(exc):
            raise Conflict("the flow was changed meanwhile; read it and try again", id=flow_id) from exc
        raise
    with FlowVersionRecord.batch_write() as batch:
        for version in store.versions(flow_id):
            batch.delete(version)


# --------------------------------------------------------------------------
# Status: draft → active ⇄ paused → stopped (final)
# --------------------------------------------------------------------------


def activate(flow_id: str) -> Flow:
    """Start a Draft flow; its segments' current members enter at once."""
    record = _record(flow_id)
    _expect(record, "activate", FlowStatus.DRAFT)
    data = FlowIn.model_validate({**record.spec["settings"], "graph": record.spec["graph"]})
    _check_references(data)
    now = clock.now()
    end = local_moment(data.end, data.time_zone or default_time_zone())
    if end is not None and end <= now:
        raise ValidationFailed.one("end", f"the flow ended at {data.end} ({data.time_zone}); move end to activate it")
    record.activated_at = clock.to_iso(now)
    _owe_admission(record)
    _transition(record, FlowStatus.DRAFT, FlowStatus.ACTIVE)
    _admit(flow_id, now)
    return to_flow(record)


def pause(flow_id: str) -> Flow:
    """Hold an active flow: nobody enters and no step runs until it resumes."""
    record = _record(flow_id)
    _expect(record, "pause", FlowStatus.ACTIVE)
    _transition(record, FlowStatus.ACTIVE, FlowStatus.PAUSED)
    return to_flow(record)


def resume(flow_id: str) -> Flow:
    """Continue a paused flow; members who joined its segments meanwhile enter now."""
    record = _record(flow_id)
    _expect(record, "resume", FlowStatus.PAUSED)
    _owe_admission(record)  # joiners during the pause were not admitted
    _transition(record, FlowStatus.PAUSED, FlowStatus.ACTIVE)
    _admit(flow_id, clock.now())
    return to_flow(record)


def stop(flow_id: str) -> Flow:
    """End the flow for good: its contacts leave at their next step, nobody enters again."""
    record = _record(flow_id)
    started_from = FlowStatus(record.status)
    _expect(record, "stop", FlowStatus.ACTIVE, FlowStatus.PAUSED)
    record.stopped_at = clock.now_iso()
    _transition(record, started_from, FlowStatus.STOPPED)
    return to_flow(record)


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


def stats(flow_id: str) -> dict[str, Any]:
    """Counters per step: the current graph's steps in order, then steps only older versions had."""
    record = _record(flow_id)
    counters = store.step_stats(flow_id)
    current = [(s["id"], s["type"]) for s in record.spec["graph"]["steps"]]
    in_current = {step_id for step_id, _ in current}
    older: dict[str, str] = {}
    for version in reversed(store.versions(flow_id)):  # newest first: a step's latest type wins
        for step in version.spec["graph"]["steps"]:
            if step["id"] not in in_current:
                older.setdefault(step["id"], step["type"])
    rows = [_step_row(step_id, type_, True, counters) for step_id, type_ in current]
    rows += [_step_row(step_id, type_, False, counters) for step_id, type_ in older.items()]
    return {"flow_id": flow_id, "version": int(record.current_version), "steps": rows}


def _step_row(step_id: str, step_type: str, in_current: bool, counters: dict[str, dict[str, Any]]) -> dict[str, Any]:
    found = counters.get(step_id, {})
    return {
        "step_id": step_id,
        "type": step_type,
        "in_current_version": in_current,
        "counters": {name: int(value) for name, value in sorted(found.items()) if isinstance(value, int | float)},
    }


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def to_flow(record: FlowRecord) -> Flow:
    return Flow(
        id=record.entity_id,
        status=FlowStatus(record.status),
        version=int(record.current_version),
        settings=record.spec["settings"],
        graph=record.spec["graph"],
        created_at=record.created_at,
        updated_at=record.updated_at,
        activated_at=record.activated_at,
        stopped_at=record.stopped_at,
        etag_version=int(record.version or 0),
    )


def _record(flow_id: str) -> FlowRecord:
    record = store.get(flow_id)
    if record is None:
        raise NotFound(f"flow {flow_id} does not exist", id=flow_id)
    return record


def _spec(data: FlowIn) -> dict[str, Any]:
    settings = data.model_dump(mode="json", exclude={"graph"})
    return {"settings": settings, "graph": data.graph.model_dump(mode="json", exclude_none=True)}


def _version(flow_id: str, number: int, spec: dict[str, Any], at: str) -> Operation:
    version = FlowVersionRecord(store.version_key(flow_id), store.version_id(number), spec=spec, created_at=at)
    return Operation("put", version, VERSION_LABEL, condition=FlowVersionRecord.entity_id.does_not_exist())


def _with_time_zone(data: FlowIn) -> FlowIn:
    """A blank time zone is the platform's default, fixed when the version is saved."""
    return data if data.time_zone else data.model_copy(update={"time_zone": default_time_zone()})


def _commit(record: FlowRecord, flow: Operation, version: Operation) -> None:
    """Write the flow and one version in one transaction (both or neither)."""
    failure = commit_units([Unit(tag=record.entity_id, operations=[flow, version])]).failures.get(0)
    if failure is None:
        return
    if int(record.current_version) == 1:
        raise Conflict(f"flow {record.entity_id} already exists", id=record.entity_id)
    current = store.get(record.entity_id)
    if current is None:
        raise NotFound(f"flow {record.entity_id} does not exist", id=record.entity_id)
    if current.status == FlowStatus.STOPPED:
        raise Conflict("a stopped flow is final; create a new flow instead", status=current.status)
    if FLOW_LABEL in failure.labels or VERSION_LABEL in failure.labels:
        # Another edit saved first (its version number is taken): re-read and try again.
        raise StaleVersion(FLOW_ENTITY, record.entity_id, int(current.version or 0))
    raise Conflict(failure.message)


def _expect(record: FlowRecord, verb: str, *allowed: FlowStatus) -> None:
    if record.status not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise Conflict(f"only a {names} flow can {verb}; this one is {record.status}", status=record.status)


def _transition(record: FlowRecord, before: FlowStatus, after: FlowStatus) -> None:
    """Save the new status only if the flow still has the old one (and nobody saved meanwhile)."""
    record.status = after.value
    record.live_type = LIVE_FLOW if after == FlowStatus.ACTIVE else None
    record.updated_at = clock.now_iso()
    try:
        record.save(condition=FlowRecord.status == before.value)
    except PutError as exc:
        if not is_condition_failure(exc):
            raise
        current = _record(record.entity_id)
        if current.status != before:
            raise Conflict(
                f"the flow became {current.status} meanwhile; it cannot go from {before.value} to {after.value}",
                status=current.status,
            ) from exc
        raise StaleVersion(FLOW_ENTITY, record.entity_id, int(current.version or 0)) from exc


def _owe_admission(record: FlowRecord) -> None:
    """Saved with the status or edit: the segments' current members are owed an admission."""
    record.members_admitted_at = None
    record.admission_cursor = None


def _admit(flow_id: str, now: datetime) -> None:
    """Enter the flow's current segment members now, for as long as a request may take; the
    flow tick goes on from where it stopped (and does it all for a flow whose start is ahead)."""
    entry.admit_current_members(flow_id, now, deadline=time.monotonic() + ADMIT_SECONDS)


def _check_references(data: FlowIn) -> None:
    """Every segment and campaign the flow names must exist, each problem naming its field."""
    problems = []
    for index, segment_id in enumerate(data.segments):
        if segment_store.get_record(GroupType.SEGMENT, segment_id) is None:
            problems.append({"field": f"segments.{index}", "problem": f"segment {segment_id} does not exist"})
    problems += _graph_references(data.graph)
    if problems:
        raise ValidationFailed(problems)


def _graph_references(graph: FlowGraph) -> list[dict[str, str]]:
    problems = []
    for index, step in enumerate(graph.steps):
        if isinstance(step, CrossCampaignStep) and campaign_store.get(step.campaign_id) is None:
            problems.append(
                {"field": f"graph.steps.{index}.campaign_id", "problem": f"campaign {step.campaign_id} does not exist"}
            )
        if isinstance(step, SegmentStep) and segment_store.get_record(GroupType.SEGMENT, step.segment_id) is None:
            problems.append(
                {"field": f"graph.steps.{index}.segment_id", "problem": f"segment {step.segment_id} does not exist"}
            )
    return problems


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors of a merged edit as fields and problems, like the API's own validation."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            problems.append({"field": field, "problem": "unknown field"})
        else:
            problems += located_problems(field, str(error["msg"]).removeprefix("Value error, "))
    return problems
