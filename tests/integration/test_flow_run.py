"""Flows run end to end on moto's state-machine interpreter: entry, cohorts, delays, branches, leaving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from herald import clock
from herald.flows import entry
from herald.store import flows as flow_store
from herald.store.tables import FlowRecord, FlowVersionRecord
from tests.harness import Herald, moto_herald

SCALE = 43200.0  # a day in two seconds


@pytest.fixture
def herald(monkeypatch: pytest.MonkeyPatch) -> Iterator[Herald]:
    monkeypatch.setenv("HERALD_FLOW_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("HERALD_FLOW_COHORT_SECONDS", "1")
    monkeypatch.setenv("HERALD_FLOW_START_GRACE_SECONDS", "0")
    with moto_herald() as h:
        yield h


def customer(h: Herald, contact_id: str, city: str = "Prague", **fields: Any) -> None:
    body = {
        "contact_id": contact_id,
        "kind": "customer",
        "first_name": contact_id.upper(),
        "email": f"{contact_id}@example.org",
        "phone": "+420601000" + contact_id[-3:].rjust(3, "0"),
        "consent": {c: {"granted": True, "source": "test"} for c in ("email", "sms")},
        "attributes": {"city": city},
        **fields,
    }
    reply = h.call("POST", "/contacts", body)
    assert reply.status == 201, reply.body


def segment(h: Herald, segment_id: str, city: str) -> None:
    rule = {"all": [{"field": "attributes.city", "op": "equals", "value": city}]}
    assert h.call("POST", "/segments", {"id": segment_id, "name": segment_id, "rule": rule}).status == 201
    h.drain("SegmentWorkerFunction")


def save_flow(flow_id: str, graph: dict[str, Any], status: str = "active", **settings: Any) -> FlowRecord:
    spec = {
        "settings": {"name": flow_id, "segments": ["prague"], "time_zone": "UTC", **settings},
        "graph": graph,
    }
    now = clock.now_iso()
    FlowVersionRecord(flow_store.version_key(flow_id), flow_store.version_id(1), spec=spec, created_at=now).save()
    record = FlowRecord(
        "flow",
        flow_id,
        name=flow_id,
        status=status,
        current_version=1,
        spec=spec,
        live_type="flow" if status == "active" else None,
        created_at=now,
        updated_at=now,
    )
    record.save()
    return record


def tick(h: Herald) -> Any:
    return h.host.invoke("FlowTickFunction", {"source": "aws.scheduler"})


def executions(h: Herald) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions")
    arn = next(m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"] if "flow-run" in m["name"])
    return list(sfn.list_executions(stateMachineArn=arn)["executions"])


def wait_idle(h: Herald, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h.drain("SenderFunction")
        found = executions(h)
        if found and all(e["status"] != "RUNNING" for e in found):
            h.drain("SenderFunction")
            return found
        time.sleep(0.1)
    raise AssertionError(f"flow executions still running: {executions(h)}")


def sent_to(h: Herald) -> list[tuple[str, str, str]]:
    """(contact, channel, step) for every message the flow sent, in time order."""
    from herald.store.tables import MessageRecord

    records = [m for m in MessageRecord.scan() if m.status == "sent"]
    records.sort(key=lambda m: m.sent_at or "")
    return [(m.contact_id, m.channel, m.occurrence) for m in records]


BRANCHING = {
    "start": "welcome",
    "steps": [
        {
            "id": "welcome",
            "type": "email",
            "subject": "Welcome {{ contact.first_name }}",
            "body": "Hi",
            "next": "wait2",
        },
        {"id": "wait2", "type": "delay", "duration": {"amount": 2, "unit": "days"}, "next": "opened"},
        {
            "id": "opened",
            "type": "condition",
            "rule": {"campaign": "self", "response": "opened"},
            "yes": "wait1",
            "no": "nudge",
        },
        {"id": "wait1", "type": "delay", "duration": {"amount": 1, "unit": "days"}, "next": "offer"},
        {"id": "offer", "type": "email", "subject": "An offer", "body": "For you"},
        {"id": "nudge", "type": "sms", "text": "Did you see our email?"},
    ],
}


def test_a_branching_flow_runs_with_delays_and_splits_its_cohort(herald: Herald) -> None:
    for contact_id in ("c001", "c002", "c003"):
        customer(herald, contact_id)
    customer(herald, "c009", city="Brno")
    segment(herald, "prague", "Prague")
    flow = save_flow("onboarding", BRANCHING)
    assert entry.admit_current_members("onboarding", clock.now()) == 3
    time.sleep(1.1)  # the entry window closes
    assert len(tick(herald)["started"]) == 1
    # c001 opens the welcome email during the 2-day delay (4 s here), before the condition looks.
    opened = {
        "event_id": "open-1",
        "type": "campaign.opened",
        "occurred_at": clock.now_iso(),
        "properties": {"campaign_id": "onboarding"},
    }
    assert herald.call("POST", "/contacts/c001/events", opened).status == 201
    found = wait_idle(herald)
    assert len(found) == 2  # the cohort, and its "no" branch
    assert all(e["status"] == "SUCCEEDED" for e in found)
    messages = sent_to(herald)
    by_contact: dict[str, list[str]] = {}
    for contact_id, channel, _ in messages:
        by_contact.setdefault(contact_id, []).append(channel)
    assert by_contact == {"c001": ["email", "email"], "c002": ["email", "sms"], "c003": ["email", "sms"]}
    runs = flow_store.runs("onboarding", ["c001", "c002", "c003"])
    assert {r.state for r in runs.values()} == {"completed"}
    stats = flow_store.step_stats("onboarding")
    assert stats["opened"]["yes"] == 1 and stats["opened"]["no"] == 2
    assert stats["welcome"]["queued"] == 3 and stats["welcome"]["sent"] == 3
    assert flow.entity_id == "onboarding"


def test_a_flow_activated_before_its_start_admits_its_members_when_the_start_comes(herald: Herald) -> None:
    customer(herald, "c001")
    segment(herald, "prague", "Prague")
    start = (clock.now() + timedelta(hours=1)).replace(tzinfo=None).isoformat(timespec="minutes")
    save_flow("later", {"start": "hello", "steps": [{"id": "hello", "type": "sms", "text": "Hi"}]}, start=start)
    before = datetime.fromisoformat(start).replace(tzinfo=UTC) - timedelta(seconds=1)
    assert entry.admit_current_members("later", before) == 0
    assert flow_store.runs("later", ["c001"]) == {}
    assert entry.admit_owed(before) == []  # not open yet: nothing, and the tick will look again
    after = datetime.fromisoformat(start).replace(tzinfo=UTC) + timedelta(seconds=1)
    assert entry.admit_owed(after) == ["later"]
    assert flow_store.runs("later", ["c001"])["c001"].state == "active"
    assert entry.admit_owed(after) == []  # once


def test_an_admission_stopped_by_its_deadline_goes_on_from_its_cursor(
    herald: Herald, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entry, "ADMISSION_BATCH", 2)
    for contact_id in ("c001", "c002", "c003", "c004", "c005"):
        customer(herald, contact_id)
    segment(herald, "prague", "Prague")
    save_flow("big", {"start": "hello", "steps": [{"id": "hello", "type": "sms", "text": "Hi"}]})
    now = clock.now()
    assert entry.admit_current_members("big", now, deadline=0) == 2  # the deadline has passed: one batch
    assert flow_store.get("big").admission_cursor == {"segment": 0, "after": "c002"}
    assert entry.admit_owed(now) == ["big"]  # the tick goes on from the cursor
    runs = flow_store.runs("big", ["c001", "c002", "c003", "c004", "c005"])
    assert {c: r.state for c, r in runs.items()} == dict.fromkeys(("c001", "c002", "c003", "c004", "c005"), "active")
    record = flow_store.get("big")
    assert record.admission_cursor is None and record.members_admitted_at is not None
    assert entry.admit_owed(now) == []


def test_a_finished_contact_still_in_the_segment_enters_again_when_the_reset_period_ends(herald: Herald) -> None:
    from herald.flows import cohorts
    from herald.flows.runner import Services, run_step

    customer(herald, "c001")
    customer(herald, "c002")
    rule = {"all": [{"field": "attributes.city", "op": "equals", "value": "Prague"}]}
    body = {"id": "prague", "name": "prague", "rule": rule, "online": True}
    assert herald.call("POST", "/segments", body).status == 201
    herald.drain("SegmentWorkerFunction")
    graph = {"start": "hello", "steps": [{"id": "hello", "type": "sms", "text": "Hi"}]}
    save_flow("again", graph, reset={"amount": 1, "unit": "days", "interactions": "all"})
    now = clock.now()
    assert entry.admit_current_members("again", now) == 2
    run = flow_store.runs("again", ["c001"])["c001"]
    state = cohorts.initial_state("again", 1, str(run.cohort), str(run.cohort), "hello", 1)
    queued: list[dict[str, Any]] = []
    assert run_step(state, now, Services(queued.extend))["action"] == "end"
    assert {r.state for r in flow_store.runs("again", ["c001", "c002"]).values()} == {"completed"}
    # c002 leaves the segment meanwhile: only c001 enters again, once the day has passed.
    assert herald.call("PATCH", "/contacts/c002", {"attributes": {"city": "Brno"}}).status == 200
    assert herald.call("POST", "/segments/prague/recalculate", {"contact_id": "c002"}).status == 200
    assert entry.readmit_due(now + timedelta(hours=23)) == 0
    assert entry.readmit_due(now + timedelta(days=1, seconds=1)) == 1
    runs = flow_store.runs("again", ["c001", "c002"])
    assert (runs["c001"].state, runs["c001"].occurrence) == ("active", "2")
    assert runs["c002"].state == "completed"
    assert entry.readmit_due(now + timedelta(days=1, seconds=1)) == 0  # the markers are gone
