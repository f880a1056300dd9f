"""Entering a flow: through the memberships stream and on activation, once per contact, and the tick's cohort starts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest

from herald import clock
from herald.flows import cohorts, entry, runner, sends
from herald.store import flows as flow_store
from herald.store.tables import CohortRecord, FlowRunRecord, PendingCohortRecord
from tests.harness import Herald, moto_herald
from tests.integration.test_flow_run import customer, save_flow
from tests.integration.test_flow_steps import email, graph, members, town
from tests.integration.test_sender import Clock

HELLO = graph(email("hello"))


@pytest.fixture
def time_() -> Iterator[Clock]:
    moment = Clock()
    clock.set_clock(lambda: moment.now)
    yield moment


@pytest.fixture
def herald(time_: Clock) -> Iterator[Herald]:
    runner._version.cache_clear()
    sends.clear_cache()
    with moto_herald() as h:
        yield h


def join(h: Herald, segment_id: str, contact_id: str, city: str) -> None:
    """The contact moves to ``city`` and the segment is recalculated for it online."""
    assert h.call("PATCH", f"/contacts/{contact_id}", {"attributes": {"city": city}}).status == 200
    reply = h.call("POST", f"/segments/{segment_id}/recalculate", {"contact_id": contact_id})
    assert reply.status == 200, reply.body


def runs(flow_id: str, *ids: str) -> dict[str, tuple[str, str]]:
    """contact -> (state, occurrence) of its run in the flow."""
    return {c: (r.state, r.occurrence) for c, r in flow_store.runs(flow_id, list(ids)).items()}


def cohort_now(flow_id: str, version: int = 1) -> str:
    return cohorts.entry_cohort(flow_id, version, clock.now())[0]


def pending() -> list[str]:
    return [m.cohort_id for m in PendingCohortRecord.query(flow_store.PENDING)]


# --------------------------------------------------------------------------
# Through the memberships stream
# --------------------------------------------------------------------------


def test_joining_a_segment_enters_the_active_flows_targeting_it_once(herald: Herald, time_: Clock) -> None:
    customer(herald, "c001", city="Ostrava")
    town(herald, "prague", "city", "Prague")
    town(herald, "brno", "city", "Brno")
    save_flow("praguers", HELLO, segments=["prague"], reset={"amount": 1, "unit": "days"})
    save_flow("brnoers", HELLO, segments=["brno"])
    herald.pump_streams()

    join(herald, "prague", "c001", "Prague")
    herald.pump_streams()

    assert runs("praguers", "c001") == {"c001": ("active", "1")}
    assert runs("brnoers", "c001") == {}
    run = FlowRunRecord.get(flow_store.run_key("praguers"), "c001")
    assert (run.cohort, run.flow_version, run.enrolled_at) == (cohort_now("praguers"), 1, clock.now_iso())
    assert members(run.cohort) == {"c001"} and pending() == [run.cohort]

    # Leaving and joining again while the run is active (even past the reset period): still one run.
    time_.advance(days=2)
    join(herald, "prague", "c001", "Ostrava")
    join(herald, "prague", "c001", "Prague")
    herald.pump_streams()
    assert runs("praguers", "c001") == {"c001": ("active", "1")}
    assert members(cohort_now("praguers")) == set() and pending() == [run.cohort]
    assert entry.admit_current_members("praguers", clock.now()) == 0


@pytest.mark.parametrize(
    ("case", "status", "settings"),
    [
        ("draft", "draft", {}),
        ("paused", "paused", {}),
        ("stopped", "stopped", {}),
        # 12:00 UTC is 13:00 in Prague: a flow starting at 13:30 there has not started yet.
        ("not_started", "active", {"start": "2026-11-23T13:30:00", "time_zone": "Europe/Prague"}),
        ("ended", "active", {"end": "2026-11-23T12:30:00", "time_zone": "Europe/Prague"}),
    ],
)
def test_a_flow_that_is_not_open_admits_nobody(
    herald: Herald, time_: Clock, case: str, status: str, settings: dict[str, Any]
) -> None:
    customer(herald, "c001", city="Ostrava")
    town(herald, "prague", "city", "Prague")
    flow = save_flow("closed", HELLO, status=status, **settings)
    open_ = save_flow("open", HELLO, start="2026-11-23T12:30:00", time_zone="Europe/Prague")

    join(herald, "prague", "c001", "Prague")
    herald.pump_streams()

    assert runs("closed", "c001") == {}
    assert runs("open", "c001") == {"c001": ("active", "1")}  # the same moment, an open flow
    report = entry.admit(flow, ["c001"], clock.now())
    assert (report.admitted, report.closed) == (0, 1)
    assert entry.admit_current_members("closed", clock.now()) == 0
    assert pending() == [cohort_now("open")]
    assert open_.entity_id == "open"


@pytest.mark.parametrize(
    ("ended_days_ago", "final", "enters"),
    [(3, "completed", False), (8, "completed", True), (8, "left", False), (30, "converted", True)],
)
def test_a_finished_run_enters_again_only_when_its_reset_period_allows(
    herald: Herald, time_: Clock, ended_days_ago: int, final: str, enters: bool
) -> None:
    customer(herald, "c001")
    town(herald, "prague", "city", "Prague")
    reset = {"amount": 1, "unit": "weeks", "interactions": "all" if final != "converted" else "conversions"}
    if final == "left":
        reset["interactions"] = "conversions"  # a dismiss does not reset under "conversions"
    save_flow("again", HELLO, reset=reset, conversion_event="purchase")
    ended = clock.to_iso(clock.now() - timedelta(days=ended_days_ago))
    FlowRunRecord(
        flow_store.run_key("again"),
        "c001",
        state=final,
        occurrence="1",
        occurrences=1,
        enrolled_at="2026-10-01T00:00:00.000Z",
        exited_at=ended,
        cohort="again-v1-old",
        flow_version=1,
    ).save()

    admitted = entry.admit_current_members("again", clock.now())

    if enters:
        assert admitted == 1
        run = FlowRunRecord.get(flow_store.run_key("again"), "c001")
        assert (run.state, run.occurrence, run.occurrences, run.exited_at) == ("active", "2", 2, None)
        assert flow_store.members(run.cohort, None, 10).members == {"c001": "2"}
    else:
        assert admitted == 0
        assert runs("again", "c001") == {"c001": (final, "1")}
        assert members(cohort_now("again")) == set() and pending() == []


def test_activation_admits_the_current_members(herald: Herald, time_: Clock) -> None:
    customer(herald, "c001")
    customer(herald, "c002")
    customer(herald, "c003", city="Brno")
    town(herald, "prague", "city", "Prague")
    created = herald.call("POST", "/flows", {"name": "Welcome", "segments": ["prague"], "graph": HELLO})
    assert created.status == 201, created.body
    flow_id = created.body["id"]
    assert runs(flow_id, "c001", "c002", "c003") == {}

    assert herald.call("POST", f"/flows/{flow_id}/activate").status == 200

    assert runs(flow_id, "c001", "c002", "c003") == {"c001": ("active", "1"), "c002": ("active", "1")}
    assert members(cohort_now(flow_id)) == {"c001", "c002"} and pending() == [cohort_now(flow_id)]
    # Pausing and resuming admits nobody twice.
    assert herald.call("POST", f"/flows/{flow_id}/pause").status == 200
    assert herald.call("POST", f"/flows/{flow_id}/resume").status == 200
    assert runs(flow_id, "c001", "c002") == {"c001": ("active", "1"), "c002": ("active", "1")}


# --------------------------------------------------------------------------
# The tick starts cohorts
# --------------------------------------------------------------------------


@pytest.fixture
def machine(herald: Herald) -> Iterator[cohorts.Starter]:
    """A starter on a one-state machine in moto (its executions succeed at once; names stay taken)."""
    sfn = boto3.client("stepfunctions")
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    arn = sfn.create_state_machine(
        name="flow-test", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/flows"
    )["stateMachineArn"]
    yield cohorts.Starter(sfn, arn)
    herald.wait_for_executions()


def executions(starter: cohorts.Starter) -> list[dict[str, Any]]:
    return list(starter.client.list_executions(stateMachineArn=starter.state_machine_arn)["executions"])


def test_the_tick_starts_each_cohort_once_after_its_window_and_grace(
    herald: Herald, time_: Clock, machine: cohorts.Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_FLOW_COHORT_SECONDS", "60")
    monkeypatch.setenv("HERALD_FLOW_START_GRACE_SECONDS", "30")
    customer(herald, "c001")
    customer(herald, "c002")
    town(herald, "prague", "city", "Prague")
    save_flow("welcome", HELLO)
    time_.advance(seconds=10)  # 12:00:10, in the window 12:00:00 to 12:01:00
    assert entry.admit(flow_store.get("welcome"), ["c001"], clock.now()).admitted == 1  # type: ignore[arg-type]
    time_.advance(seconds=40)
    assert entry.admit(flow_store.get("welcome"), ["c002"], clock.now()).admitted == 1  # type: ignore[arg-type]
    cohort = "welcome-v1-20261123120000"
    assert members(cohort) == {"c001", "c002"}

    assert cohorts.start_due(time_.advance(seconds=39), machine) == []  # 12:01:29: in the grace period
    assert executions(machine) == [] and pending() == [cohort]

    assert cohorts.start_due(time_.advance(seconds=1), machine) == [cohort]  # 12:01:30
    [started] = executions(machine)
    assert started["name"] == cohort
    given = json.loads(machine.client.describe_execution(executionArn=started["executionArn"])["input"])
    assert given == cohorts.initial_state("welcome", 1, cohort, cohort, "hello", 1)
    record = CohortRecord.get(flow_store.cohorts_key("welcome"), cohort)
    assert (record.state, record.execution_arn, record.flow_version) == ("running", started["executionArn"], 1)
    assert pending() == []

    assert cohorts.start_due(time_.advance(minutes=5), machine) == []
    assert len(executions(machine)) == 1


def test_a_tick_that_crashes_after_the_start_leaves_exactly_one_execution(
    herald: Herald, time_: Clock, machine: cohorts.Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_FLOW_START_GRACE_SECONDS", "0")
    customer(herald, "c001")
    town(herald, "prague", "city", "Prague")
    save_flow("welcome", HELLO)
    entry.admit_current_members("welcome", clock.now())
    cohort = cohort_now("welcome")
    original = PendingCohortRecord.delete

    def crash(self: PendingCohortRecord, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the tick died")

    monkeypatch.setattr(PendingCohortRecord, "delete", crash)
    with pytest.raises(RuntimeError):
        cohorts.start_due(time_.advance(minutes=2), machine)
    assert len(executions(machine)) == 1 and pending() == [cohort]
    herald.wait_for_executions()  # the first execution has finished: its name is still taken

    monkeypatch.setattr(PendingCohortRecord, "delete", original)
    assert cohorts.start_due(time_.advance(minutes=1), machine) == [cohort]

    [only] = executions(machine)
    assert pending() == []
    record = CohortRecord.get(flow_store.cohorts_key("welcome"), cohort)
    assert (record.state, record.execution_arn) == ("running", only["executionArn"])
