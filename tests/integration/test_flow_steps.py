"""The flow step runner on moto, one page at a time: leave checks, every step type, splits, retries, versions, paging.

These call :func:`herald.flows.runner.run_step` directly with a list for the
delivery queue and a recording starter, so each step's effects are checked
without the state machine's timing (test_flow_run.py runs the real ASL).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from herald import clock
from herald.flows import cohorts, entry, runner, sends
from herald.flows.runner import Services, run_step
from herald.segments import service as segments
from herald.store import files
from herald.store import flows as flow_store
from herald.store.tables import CohortRecord, ContactRecord, FlowRunRecord, StepLogRecord, SuppressionRecord
from tests.harness import Herald, moto_herald
from tests.integration.test_flow_run import customer, save_flow
from tests.integration.test_sender import Clock, campaign, emails, queue

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:flow-run"
PRAGUE = ("c001", "c002", "c003")


@pytest.fixture
def time_() -> Iterator[Clock]:
    moment = Clock()
    clock.set_clock(lambda: moment.now)
    yield moment


@pytest.fixture
def herald(time_: Clock) -> Iterator[Herald]:
    runner._version.cache_clear()  # versions are cached per process; each test's moto store is new
    sends.clear_cache()
    with moto_herald() as h:
        yield h
    runner._version.cache_clear()
    sends.clear_cache()


class Queued(list[dict[str, Any]]):
    """The delivery queue: every body the runner queued, in order."""

    def __call__(self, bodies: list[dict[str, Any]]) -> None:
        self.extend(bodies)

    def contacts(self) -> list[str]:
        return [b["contact_id"] for b in self]


class FakeStarter(cohorts.Starter):
    """Records child executions instead of starting them."""

    def __init__(self) -> None:
        super().__init__(client=None, state_machine_arn=ARN)
        self.started: list[tuple[str, dict[str, Any]]] = []

    def start(self, cohort_id: str, state: dict[str, Any]) -> str:
        self.started.append((cohort_id, state))
        return f"{ARN.replace(':stateMachine:', ':execution:')}:{cohort_id}"


@pytest.fixture
def queued() -> Queued:
    return Queued()


@pytest.fixture
def starter() -> FakeStarter:
    return FakeStarter()


@pytest.fixture
def services(queued: Queued, starter: FakeStarter) -> Services:
    return Services(queued, starter)


def town(h: Herald, segment_id: str, field: str, value: str) -> None:
    """A segment of contacts whose attribute ``field`` equals ``value``, filled now by online recalculation.

    (Quicker than the first fill's worker, which these tests do not need.)
    """
    rule = {"field": f"attributes.{field}", "op": "equals", "value": value}
    body = {"id": segment_id, "name": segment_id, "rule": rule, "online": True}
    assert h.call("POST", "/segments", body).status == 201
    for record in ContactRecord.scan():
        path = f"/segments/{segment_id}/recalculate"
        assert h.call("POST", path, {"contact_id": record.contact_id}).status == 200


def people(h: Herald, *ids: str, **attributes: Any) -> None:
    for contact_id in ids:
        customer(h, contact_id, **({"attributes": {"city": "Prague", **attributes}} if attributes else {}))


def enter(flow_id: str, at: datetime, version: int = 1) -> dict[str, Any]:
    """Admit the flow's segment members now; the state its cohort's execution starts with."""
    entry.admit_current_members(flow_id, at)
    cohort_id = cohorts.entry_cohort(flow_id, version, at)[0]
    start = str(flow_store.get_version(flow_id, version).spec["graph"]["start"])  # type: ignore[union-attr]
    return cohorts.initial_state(flow_id, version, cohort_id, cohort_id, start, 1)


def graph(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"start": steps[0]["id"], "steps": list(steps)}


def email(step_id: str, next_: str | None = None, subject: str = "Hello {{ contact.first_name }}") -> dict[str, Any]:
    return {"id": step_id, "type": "email", "subject": subject, "body": "Body", "next": next_}


def log_of(state: dict[str, Any], page: int = 0) -> StepLogRecord:
    key = f"{state['cohort_id']}#{int(state['seq']):04d}#{page:05d}"
    return StepLogRecord.get(flow_store.log_key(state["flow_id"]), key)


def members(cohort_id: str) -> set[str]:
    return set(flow_store.members(cohort_id, None, 1000).members)


def run_states(flow_id: str, *ids: str) -> dict[str, str]:
    return {c: r.state for c, r in flow_store.runs(flow_id, list(ids)).items()}


def counters(flow_id: str, step_id: str) -> dict[str, int]:
    return {k: int(v) for k, v in flow_store.step_stats(flow_id).get(step_id, {}).items() if v}


def unsubscribe(contact_id: str, scope: str) -> None:
    SuppressionRecord(contact_id, scope, reason="unsubscribe", at=clock.now_iso()).save()


def cohort_state(flow_id: str, cohort_id: str) -> CohortRecord:
    return CohortRecord.get(flow_store.cohorts_key(flow_id), cohort_id)


# --------------------------------------------------------------------------
# Leaving before a step
# --------------------------------------------------------------------------


def test_members_who_left_unsubscribed_or_converted_leave_before_the_step(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001", "c002", "c003", "c004", "c005")
    town(herald, "prague", "city", "Prague")
    save_flow(
        "welcome",
        graph(email("hello", "bye"), email("bye")),
        show_after_conversion=False,
        conversion_event="purchase",
        category="news",
    )
    state = enter("welcome", time_.now)
    time_.advance(hours=1)
    # c002 moves away (online recalculation drops the membership).
    assert herald.call("PATCH", "/contacts/c002", {"attributes": {"city": "Brno"}}).status == 200
    assert herald.call("POST", "/segments/prague/recalculate", {"contact_id": "c002"}).status == 200
    assert ContactRecord.get("c002").segment_ids is None
    # c003 unsubscribed from everything in the flow's category; c005 only from its emails (still in the flow).
    unsubscribe("c003", "all#category#news")
    unsubscribe("c005", "email#all")
    # c004 converted after entering.
    event = {"event_id": "buy-1", "type": "purchase", "occurred_at": clock.now_iso(), "properties": {}}
    assert herald.call("POST", "/contacts/c004/events", event).status == 201

    result = run_step(state, time_.now, services)

    assert (result["action"], result["step_id"], result["seq"]) == ("next", "bye", 2)
    assert sorted(queued.contacts()) == ["c001", "c005"]
    assert run_states("welcome", "c001", "c002", "c003", "c004", "c005") == {
        "c001": "active",
        "c002": "left",
        "c003": "left",
        "c004": "converted",
        "c005": "active",
    }
    run = FlowRunRecord.get(flow_store.run_key("welcome"), "c002")
    assert (run.exit_reason, run.exited_at) == ("left_segments", clock.now_iso())
    assert members(state["cohort_id"]) == {"c001", "c002", "c003", "c004", "c005"}  # closed runs skip leavers
    outcomes = log_of(state).outcomes
    assert outcomes["c002"] == ["left", "left_segments", ""]
    assert outcomes["c003"] == ["left", "unsubscribed", ""]
    assert outcomes["c004"] == ["left", "converted", ""]
    assert outcomes["c001"][0] == outcomes["c005"][0] == "queued"
    assert counters("welcome", "hello") == {
        "reached": 2,
        "queued": 2,
        "left": 3,
        "left_left_segments": 1,
        "left_unsubscribed": 1,
        "left_converted": 1,
    }

    # At the next step the leavers are gone; nobody leaves twice.
    run_step(result, time_.now, services)
    assert sorted(queued.contacts()[2:]) == ["c001", "c005"]
    assert counters("welcome", "bye") == {"reached": 2, "queued": 2}
    assert run_states("welcome", "c001", "c005") == {"c001": "completed", "c005": "completed"}


def test_a_conversion_before_entry_or_with_show_after_conversion_keeps_the_member(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001", "c002")
    town(herald, "prague", "city", "Prague")
    early = {"event_id": "buy-0", "type": "purchase", "occurred_at": clock.now_iso(), "properties": {}}
    assert herald.call("POST", "/contacts/c001/events", early).status == 201
    time_.advance(minutes=1)
    save_flow("strict", graph(email("hello")), show_after_conversion=False, conversion_event="purchase")
    save_flow("lenient", graph(email("hello")), show_after_conversion=True, conversion_event="purchase")
    strict, lenient = enter("strict", time_.now), enter("lenient", time_.now)
    time_.advance(hours=1)
    later = {"event_id": "buy-1", "type": "purchase", "occurred_at": clock.now_iso(), "properties": {}}
    assert herald.call("POST", "/contacts/c002/events", later).status == 201

    run_step(strict, time_.now, services)
    run_step(lenient, time_.now, services)

    # c001 bought before entering: no conversion in this run. c002 converted: leaves only the strict flow.
    assert log_of(strict).outcomes["c001"][0] == "queued"
    assert log_of(strict).outcomes["c002"] == ["left", "converted", ""]
    assert {c: o[0] for c, o in log_of(lenient).outcomes.items()} == {"c001": "queued", "c002": "queued"}
    # The lenient flow keeps c002 to the end, where the run is recorded as converted (for reset periods).
    assert run_states("lenient", "c001", "c002") == {"c001": "completed", "c002": "converted"}


# --------------------------------------------------------------------------
# A retried task sends nothing twice
# --------------------------------------------------------------------------


def test_a_retried_email_step_queues_the_same_message_ids_and_each_contact_gets_one_email(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, *PRAGUE)
    town(herald, "prague", "city", "Prague")
    save_flow("welcome", graph(email("hello", "bye"), email("bye")))
    state = enter("welcome", time_.now)

    first = run_step(state, time_.now, services)
    batch = list(queued)
    time_.advance(seconds=30)  # the task timed out after its work; Step Functions runs it again
    again = run_step(state, time_.now, services)
    retried = queued[len(batch) :]

    assert first["step_id"] == again["step_id"] == "bye"
    ids = {
        b["contact_id"]: sends.step_message_id("welcome", b["contact_id"], b["sends"][0]["occurrence"]) for b in batch
    }
    assert ids == {
        b["contact_id"]: sends.step_message_id("welcome", b["contact_id"], b["sends"][0]["occurrence"]) for b in retried
    }
    assert {o[2] for o in log_of(state).outcomes.values()} == set(ids.values())
    assert [b["sends"][0]["occurrence"] for b in batch] == [f"flow:1:{state['root']}:1"] * 3

    queue(herald, *batch, *retried)
    herald.drain("SenderFunction")

    sent = sorted(m.destinations["ToAddresses"][0] for m in emails())
    assert sent == [f"{c}@example.org" for c in PRAGUE]
    assert counters("welcome", "hello") == {"reached": 3, "queued": 3, "sent": 3}


# --------------------------------------------------------------------------
# Conditions split the cohort
# --------------------------------------------------------------------------

GOLD = {"field": "attributes.tier", "op": "equals", "value": "gold"}


def split_flow(flow_id: str, yes: str | None = "gold_mail", no: str | None = "plain_mail") -> None:
    steps = [{"id": "check", "type": "condition", "rule": GOLD, "yes": yes, "no": no}]
    steps += [email(s) for s in (yes, no) if s]
    save_flow(flow_id, {"start": "check", "steps": steps})


def gold_and_plain(h: Herald) -> None:
    people(h, "c001", "c002", tier="gold")
    people(h, "c003", tier="basic")
    town(h, "prague", "city", "Prague")


def test_a_condition_continues_yes_here_and_starts_one_execution_for_no(
    herald: Herald, time_: Clock, starter: FakeStarter, services: Services
) -> None:
    gold_and_plain(herald)
    split_flow("tiers")
    state = enter("tiers", time_.now)

    result = run_step(state, time_.now, services)

    yes = cohorts.child_cohort("tiers", state["cohort_id"], 1, "yes")
    no = cohorts.child_cohort("tiers", state["cohort_id"], 1, "no")
    assert (members(yes), members(no)) == ({"c001", "c002"}, {"c003"})
    assert (result["action"], result["cohort_id"], result["step_id"], result["seq"]) == ("next", yes, "gold_mail", 2)
    assert result["root"] == state["root"]
    [(child, child_state)] = starter.started
    assert child == no
    assert (child_state["cohort_id"], child_state["step_id"], child_state["seq"]) == (no, "plain_mail", 2)
    assert child_state["root"] == state["root"] and child_state["version"] == 1
    assert cohort_state("tiers", no).state == "running"
    assert cohort_state("tiers", state["cohort_id"]).state == "ended"
    assert {c: o[0] for c, o in log_of(state).outcomes.items()} == {"c001": "yes", "c002": "yes", "c003": "no"}
    assert counters("tiers", "check") == {"reached": 3, "yes": 2, "no": 1}
    assert run_states("tiers", *PRAGUE) == dict.fromkeys(PRAGUE, "active")

    # A retried split starts the same child (by name) and reuses the same cohorts.
    again = run_step(state, time_.now, services)
    assert again["cohort_id"] == yes and [s[0] for s in starter.started] == [no, no]
    assert counters("tiers", "check") == {"reached": 3, "yes": 2, "no": 1}


def test_a_branch_without_a_step_completes_its_runs_and_starts_nothing(
    herald: Herald, time_: Clock, starter: FakeStarter, services: Services
) -> None:
    gold_and_plain(herald)
    split_flow("tiers", no=None)
    state = enter("tiers", time_.now)

    result = run_step(state, time_.now, services)

    assert starter.started == []
    assert (result["action"], result["step_id"]) == ("next", "gold_mail")
    assert members(result["cohort_id"]) == {"c001", "c002"}
    assert run_states("tiers", *PRAGUE) == {"c001": "active", "c002": "active", "c003": "completed"}


def test_a_one_sided_split_continues_without_a_child_and_an_empty_side_ends(
    herald: Herald, time_: Clock, starter: FakeStarter, services: Services
) -> None:
    people(herald, *PRAGUE, tier="basic")
    town(herald, "prague", "city", "Prague")
    split_flow("tiers")
    split_flow("goldonly", no=None)
    state = enter("tiers", time_.now)
    ending = enter("goldonly", time_.now)

    result = run_step(state, time_.now, services)
    ended = run_step(ending, time_.now, services)

    assert starter.started == []
    assert (result["action"], result["step_id"]) == ("next", "plain_mail")
    assert members(result["cohort_id"]) == set(PRAGUE)
    assert ended["action"] == "end"  # everyone went "no", where the path ends
    assert run_states("goldonly", *PRAGUE) == dict.fromkeys(PRAGUE, "completed")


# --------------------------------------------------------------------------
# Cross-campaign messages
# --------------------------------------------------------------------------


def test_a_cross_campaign_step_queues_only_qualified_contacts_and_the_flow_goes_on(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    gold_and_plain(herald)
    town(herald, "gold", "tier", "gold")
    campaign(
        "promo",
        [{"type": "email", "subject": "Promo", "body": "Deal"}],
        published=True,
        targeting={"segment_ids": ["gold"]},
    )
    steps = [
        {"id": "reuse", "type": "cross_campaign_email", "campaign_id": "promo", "next": "gone"},
        {"id": "gone", "type": "cross_campaign_email", "campaign_id": "nosuch", "next": "after"},
        email("after"),
    ]
    save_flow("nurture", graph(*steps))
    state = enter("nurture", time_.now)

    first = run_step(state, time_.now, services)
    assert queued.contacts() == ["c001", "c002"]
    assert log_of(state).outcomes["c003"] == ["skipped", "not_qualified", ""]
    assert counters("nurture", "reuse") == {"reached": 3, "queued": 2, "skipped": 1, "skipped_not_qualified": 1}
    assert first["step_id"] == "gone"

    second = run_step(first, time_.now, services)
    assert {tuple(o) for o in log_of(first).outcomes.values()} == {("skipped", "campaign_missing", "")}
    assert len(queued) == 2 and second["step_id"] == "after"

    run_step(second, time_.now, services)
    assert sorted(queued.contacts()[2:]) == list(PRAGUE)  # everyone reaches the next step

    queue(herald, *queued[:2])
    herald.drain("SenderFunction")
    assert sorted((m.subject, m.destinations["ToAddresses"][0]) for m in emails()) == [
        ("Promo", "c001@example.org"),
        ("Promo", "c002@example.org"),
    ]


def test_a_cross_campaign_step_of_a_stopped_campaign_skips_everyone(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001")
    town(herald, "prague", "city", "Prague")
    campaign("promo", [{"type": "email", "subject": "Promo", "body": "Deal"}], state="Stopped", published=True)
    save_flow("nurture", graph({"id": "reuse", "type": "cross_campaign_email", "campaign_id": "promo"}))
    state = enter("nurture", time_.now)
    run_step(state, time_.now, services)
    assert queued == [] and log_of(state).outcomes["c001"] == ["skipped", "campaign_not_running", ""]


# --------------------------------------------------------------------------
# Actions, PDFs, segments
# --------------------------------------------------------------------------


def test_web_service_points_and_stage_steps_queue_their_deliveries(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001", points=5)
    town(herald, "prague", "city", "Prague")
    steps = [
        {"id": "tell", "type": "web_service", "url": "https://crm.example.com/hook", "body": "{}", "next": "reward"},
        {"id": "reward", "type": "award_points", "points": 10, "next": "promote"},
        {"id": "promote", "type": "update_stage", "stage": "engaged"},
    ]
    save_flow("loyalty", graph(*steps), priority=7)
    state = enter("loyalty", time_.now)
    while state["action"] != "end":
        state = run_step(state, time_.now, services)

    root = state["root"]
    assert [b["sends"][0]["flow"]["step_id"] for b in queued] == ["tell", "reward", "promote"]
    for seq, body in enumerate(queued, start=1):
        [send] = body["sends"]
        assert body["contact_id"] == "c001"
        assert (send["campaign_id"], send["occurrence"], send["priority"]) == ("loyalty", f"flow:1:{root}:{seq}", 7)
        assert send["flow"]["version"] == 1
    actions = [sends.step_campaign("loyalty", 1, s).spec["actions"] for s in ("tell", "reward", "promote")]  # type: ignore[union-attr]
    assert [a[0]["type"] for a in actions] == ["webhook", "points", "stage"]

    queue(herald, *queued[1:])
    herald.drain("SenderFunction")
    assert herald.call("GET", "/contacts/c001").body["attributes"] == {
        "city": "Prague",
        "points": 15,
        "stage": "engaged",
    }
    assert run_states("loyalty", "c001") == {"c001": "completed"}


def test_an_export_pdf_step_stores_one_pdf_per_member_and_a_broken_template_fails(
    herald: Herald, time_: Clock, services: Services
) -> None:
    bucket = herald.template.physical_name("FlowFilesBucket")
    files.configure(bucket)
    people(herald, "c001", "c002")
    town(herald, "prague", "city", "Prague")
    good = {"id": "letter", "type": "export_pdf", "template": "Dear {{ contact.first_name }}"}
    bad = {"id": "letter", "type": "export_pdf", "template": "{{ contact.first_name + 1 }}"}
    save_flow("letters", graph(good))
    save_flow("broken", graph(bad))
    state, broken = enter("letters", time_.now), enter("broken", time_.now)

    run_step(state, time_.now, services)
    run_step(broken, time_.now, services)

    outcomes = log_of(state).outcomes
    s3 = boto3.client("s3")
    for contact_id in ("c001", "c002"):
        outcome, _, key = outcomes[contact_id]
        assert outcome == "exported"
        assert key == f"flows/letters/pdf/{state['root']}/0001-letter/{contact_id}.pdf"
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert data.startswith(b"%PDF-")
    assert counters("letters", "letter") == {"reached": 2, "exported": 2}
    failed = log_of(broken).outcomes["c001"]
    assert failed[0] == "failed" and failed[1].startswith("render_error")
    assert counters("broken", "letter") == {"reached": 2, "failed": 2, "failed_render_error": 2}  # one counter
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="flows/broken/").get("Contents")


def test_segment_steps_change_membership_and_log_it(herald: Herald, time_: Clock, services: Services) -> None:
    gold_and_plain(herald)
    town(herald, "gold", "tier", "gold")
    steps = [
        {"id": "join", "type": "add_to_segment", "segment_id": "gold", "next": "drop"},
        {"id": "drop", "type": "remove_from_segment", "segment_id": "gold"},
    ]
    save_flow("promote", graph(*steps))
    state = enter("promote", time_.now)

    after = run_step(state, time_.now, services)
    added = log_of(state).outcomes
    assert added == {
        "c001": ["added", "already_member", ""],
        "c002": ["added", "already_member", ""],
        "c003": ["added", "", ""],
    }
    assert "gold" in ContactRecord.get("c003").segment_ids
    assert counters("promote", "join") == {"reached": 3, "added": 3}

    segments.automation_change("gold", ["c002"], add=False)
    run_step(after, time_.now, services)
    removed = log_of(after).outcomes
    assert removed["c001"] == ["removed", "", ""] and removed["c003"] == ["removed", "", ""]
    assert removed["c002"] == ["removed", "not_member", ""]
    assert all("gold" not in (ContactRecord.get(c).segment_ids or ()) for c in PRAGUE)


# --------------------------------------------------------------------------
# Delays, pause, stop, end
# --------------------------------------------------------------------------


def test_a_delay_answers_wait_until_a_whole_second(
    herald: Herald, time_: Clock, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    people(herald, "c001")
    town(herald, "prague", "city", "Prague")
    save_flow(
        "slow",
        graph({"id": "pause", "type": "delay", "duration": {"amount": 2, "unit": "days"}, "next": "hi"}, email("hi")),
    )
    state = enter("slow", time_.now)
    moment = time_.advance(seconds=0.25)

    result = run_step(state, moment, services)

    assert (result["action"], result["step_id"], result["seq"]) == ("wait", "hi", 2)
    assert result["wait_until"] == "2026-11-25T12:00:01Z"  # 2 days after 12:00:00.25, rounded up
    assert log_of(state).outcomes["c001"] == ["waited", "2026-11-25T12:00:01Z", ""]
    assert counters("slow", "pause") == {"reached": 1, "waited": 1}


def test_a_paused_flow_holds_its_cohort_without_touching_it(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001")
    town(herald, "prague", "city", "Prague")
    save_flow("held", graph(email("hi")))
    state = enter("held", time_.now)
    record = flow_store.get("held")
    assert record is not None
    record.status, record.live_type = "paused", None
    record.save()

    result = run_step(state, time_.now, services)

    assert result == {
        **state,
        "action": "hold",
        "wait_until": "2026-11-23T13:00:00Z",
        "calls": 1,
        "born": clock.now_iso(),
    }
    assert queued == [] and flow_store.step_stats("held") == {}
    assert run_states("held", "c001") == {"c001": "active"}


@pytest.mark.parametrize("closing", ["flow_stopped", "flow_ended"])
def test_a_stopped_or_ended_flow_drains_every_member_and_ends(
    herald: Herald, time_: Clock, queued: Queued, services: Services, closing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_FLOW_PAGE_SIZE", "2")
    people(herald, *PRAGUE)
    town(herald, "prague", "city", "Prague")
    record = save_flow("closing", graph(email("hi", "bye"), email("bye")), end="2026-11-24T00:00:00")
    state = enter("closing", time_.now)
    if closing == "flow_stopped":
        record.status, record.live_type = "stopped", None
        record.save()
    else:
        time_.advance(days=1)

    first = run_step(state, time_.now, services)
    assert first["action"] == "page"
    last = run_step(first, time_.now, services)

    assert last["action"] == "end" and queued == []
    outcomes = {**log_of(state).outcomes, **log_of(first, page=1).outcomes}
    assert outcomes == {c: ["left", closing, ""] for c in PRAGUE}
    assert run_states("closing", *PRAGUE) == dict.fromkeys(PRAGUE, "left")
    assert counters("closing", "hi") == {"left": 3, f"left_{closing}": 3}
    assert cohort_state("closing", state["cohort_id"]).state == "ended"


def test_an_empty_cohort_ends(herald: Herald, time_: Clock, queued: Queued, services: Services) -> None:
    town(herald, "prague", "city", "Prague")
    save_flow("empty", graph(email("hi", "bye"), email("bye")))
    state = cohorts.initial_state("empty", 1, "empty-v1-x", "empty-v1-x", "hi", 1)
    assert run_step(state, time_.now, services)["action"] == "end"
    assert queued == [] and list(flow_store.logs("empty")) == []


# --------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------


def test_a_running_cohort_keeps_its_version_after_an_edit_and_new_entrants_take_the_new_one(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001")
    town(herald, "prague", "city", "Prague")
    body = {
        "name": "Welcome",
        "segments": ["prague"],
        "graph": graph(email("hello", "bye", "Old {{ contact.first_name }}"), email("bye")),
    }
    created = herald.call("POST", "/flows", body)
    assert created.status == 201, created.body
    flow_id = created.body["id"]
    assert herald.call("POST", f"/flows/{flow_id}/activate").status == 200
    cohort = cohorts.entry_cohort(flow_id, 1, time_.now)[0]
    state = cohorts.initial_state(flow_id, 1, cohort, cohort, "hello", 1)
    assert members(state["cohort_id"]) == {"c001"}

    edited = herald.call(
        "PATCH", f"/flows/{flow_id}", {"graph": graph(email("hello", None, "New {{ contact.first_name }}"))}
    )
    assert edited.status == 200 and edited.body["version"] == 2

    result = run_step(state, time_.now, services)
    assert (result["action"], result["step_id"], result["version"]) == ("next", "bye", 1)  # version 1's graph
    assert queued[0]["sends"][0]["flow"] == {"version": 1, "step_id": "hello"}
    queue(herald, *queued)
    herald.drain("SenderFunction")
    assert [m.subject for m in emails()] == ["Old C001"]

    time_.advance(minutes=5)
    people(herald, "c002")
    assert herald.call("POST", "/segments/prague/recalculate", {"contact_id": "c002"}).status == 200
    herald.pump_streams()
    [run] = [r for r in flow_store.runs(flow_id, ["c002"]).values()]
    assert run.flow_version == 2 and "-v2-" in run.cohort
    assert members(run.cohort) == {"c002"}


# --------------------------------------------------------------------------
# Paging
# --------------------------------------------------------------------------


def test_a_step_walks_a_big_cohort_page_by_page_and_records_every_page(
    herald: Herald, time_: Clock, queued: Queued, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_FLOW_PAGE_SIZE", "2")
    everyone = ("c001", "c002", "c003", "c004", "c005")
    people(herald, *everyone)
    town(herald, "prague", "city", "Prague")
    save_flow(
        "big",
        graph(
            email("hello", "pause"),
            {"id": "pause", "type": "delay", "duration": {"amount": 1, "unit": "hours"}, "next": "bye"},
            email("bye"),
        ),
    )
    state = enter("big", time_.now)

    pages = [state]
    while pages[-1]["action"] in ("start", "page"):
        pages.append(run_step(pages[-1], time_.now, services))
    assert [p["action"] for p in pages[1:]] == ["page", "page", "next"]
    assert [p["page"] for p in pages[1:3]] == [1, 2] and [p["cursor"] for p in pages[1:3]] == ["c002", "c004"]
    assert pages[-1]["step_id"] == "pause" and pages[-1]["cursor"] is None and pages[-1]["page"] == 0
    assert sorted(queued.contacts()) == list(everyone)
    logged = [log_of(state, page) for page in range(3)]
    assert [sorted(log.outcomes) for log in logged] == [["c001", "c002"], ["c003", "c004"], ["c005"]]
    assert counters("big", "hello") == {"reached": 5, "queued": 5}

    # A delay's pages all wait until the same moment: the first page's arrival plus the delay.
    arrived = time_.advance(seconds=20)
    delay = run_step(pages[-1], arrived, services)
    while delay["action"] != "wait":
        delay = run_step(delay, time_.advance(seconds=20), services)
    assert delay["wait_until"] == clock.to_iso(arrived + timedelta(hours=1)).replace(".000", "")
    assert counters("big", "pause") == {"reached": 5, "waited": 5}


def test_a_retried_page_after_leavers_reads_the_same_members_and_counts_once(
    herald: Herald, time_: Clock, queued: Queued, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_FLOW_PAGE_SIZE", "2")
    everyone = ("c001", "c002", "c003", "c004", "c005")
    people(herald, *everyone)
    town(herald, "prague", "city", "Prague")
    save_flow("retry", graph(email("hello", "bye"), email("bye")))
    state = enter("retry", time_.now)
    # c001 leaves before the first page: a retry of that page must still read c001 and c002, not c003.
    assert herald.call("PATCH", "/contacts/c001", {"attributes": {"city": "Brno"}}).status == 200
    assert herald.call("POST", "/segments/prague/recalculate", {"contact_id": "c001"}).status == 200

    first = run_step(state, time_.now, services)
    again = run_step(state, time_.now, services)  # Step Functions retries the task with the same input
    assert again["cursor"] == first["cursor"] == "c002"
    rest = first
    while rest["action"] == "page":
        rest = run_step(rest, time_.now, services)
    assert rest["action"] == "next" and rest["step_id"] == "bye"
    assert sorted(log_of(state).outcomes) == ["c001", "c002"]
    assert counters("retry", "hello") == {"reached": 4, "queued": 4, "left": 1, "left_left_segments": 1}
    # Both attempts queued c002's send under one message id: the sender's claim sends it once.
    ids = [body["sends"][0]["occurrence"] for body in queued if body["contact_id"] == "c002"]
    assert len(ids) == 2 and len(set(ids)) == 1


def test_a_path_everyone_left_ends_instead_of_walking_on(
    herald: Herald, time_: Clock, queued: Queued, services: Services
) -> None:
    people(herald, "c001")
    town(herald, "prague", "city", "Prague")
    wait = {"id": "wait", "type": "delay", "duration": {"amount": 7, "unit": "days"}, "next": "bye"}
    save_flow("gone", graph(wait, email("bye")))
    state = enter("gone", time_.now)
    assert herald.call("PATCH", "/contacts/c001", {"attributes": {"city": "Brno"}}).status == 200
    assert herald.call("POST", "/segments/prague/recalculate", {"contact_id": "c001"}).status == 200

    result = run_step(state, time_.now, services)

    assert result["action"] == "end"  # no 7-day wait for nobody
    assert run_states("gone", "c001") == {"c001": "left"}
    assert cohort_state("gone", state["cohort_id"]).state == "ended"


def test_a_retried_condition_acts_on_its_first_decision_even_if_the_contact_changed(
    herald: Herald, time_: Clock, starter: FakeStarter, services: Services
) -> None:
    gold_and_plain(herald)
    split_flow("tiers")
    state = enter("tiers", time_.now)
    run_step(state, time_.now, services)
    # c003 turns gold after the first attempt; Step Functions retries the same page.
    assert herald.call("PATCH", "/contacts/c003", {"attributes": {"city": "Prague", "tier": "gold"}}).status == 200
    again = run_step(state, time_.now, services)

    yes = cohorts.child_cohort("tiers", state["cohort_id"], 1, "yes")
    no = cohorts.child_cohort("tiers", state["cohort_id"], 1, "no")
    assert (members(yes), members(no)) == ({"c001", "c002"}, {"c003"})  # never in both
    assert again["cohort_id"] == yes and [s[0] for s in starter.started] == [no, no]


def test_a_page_that_failed_before_its_log_was_written_is_decided_and_counted_on_retry(
    herald: Herald, time_: Clock, queued: Queued, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    people(herald, "c001", "c002")
    town(herald, "prague", "city", "Prague")
    save_flow("once", graph(email("hello")))
    state = enter("once", time_.now)

    def broken(*_: Any) -> bool:
        raise RuntimeError("DynamoDB unavailable")

    monkeypatch.setattr(flow_store, "record_page", broken)
    with pytest.raises(RuntimeError):
        run_step(state, time_.now, services)
    monkeypatch.undo()
    assert queued == [] and run_states("once", "c001", "c002") == {"c001": "active", "c002": "active"}

    assert run_step(state, time_.now, services)["action"] == "end"
    assert sorted(log_of(state).outcomes) == ["c001", "c002"]
    assert counters("once", "hello") == {"reached": 2, "queued": 2}
    assert run_states("once", "c001", "c002") == {"c001": "completed", "c002": "completed"}


def test_a_deleted_flows_cohort_closes_its_runs_and_ends(herald: Herald, time_: Clock, services: Services) -> None:
    people(herald, "c001", "c002")
    town(herald, "prague", "city", "Prague")
    record = save_flow("gone", graph(email("hello")))
    state = enter("gone", time_.now)
    record.delete()
    flow_store.get_version("gone", 1).delete()  # type: ignore[union-attr]

    assert run_step(state, time_.now, services)["action"] == "end"
    runs = flow_store.runs("gone", ["c001", "c002"])
    assert {(r.state, r.exit_reason) for r in runs.values()} == {("left", "flow_deleted")}


def test_a_long_lived_cohort_hands_over_to_a_successor_execution(
    herald: Herald, time_: Clock, starter: FakeStarter, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    people(herald, "c001")
    town(herald, "prague", "city", "Prague")
    wait = {"id": "wait", "type": "delay", "duration": {"amount": 1, "unit": "days"}, "next": "hello"}
    save_flow("long", graph(wait, email("hello")))
    state = enter("long", time_.now)
    monkeypatch.setattr(runner, "MAX_CALLS_PER_EXECUTION", 1)

    result = run_step(state, time_.now, services)

    assert result["action"] == "end"  # this execution ends; its cohort does not
    [(name, successor)] = starter.started
    assert name == f"{state['cohort_id']}-g1"
    assert (successor["action"], successor["step_id"], successor["generation"], successor["calls"]) == (
        "wait",
        "hello",
        1,
        0,
    )
    assert run_states("long", "c001") == {"c001": "active"}


def test_a_contact_who_converted_on_the_way_finishes_as_converted_even_if_shown_after_conversion(
    herald: Herald, time_: Clock, services: Services
) -> None:
    people(herald, "c001", "c002")
    town(herald, "prague", "city", "Prague")
    save_flow("buyers", graph(email("hello")), show_after_conversion=True, conversion_event="purchase")
    state = enter("buyers", time_.now)
    time_.advance(minutes=5)
    event = {"event_id": "buy-1", "type": "purchase", "occurred_at": clock.now_iso(), "properties": {}}
    assert herald.call("POST", "/contacts/c001/events", event).status == 201

    run_step(state, time_.now, services)

    assert run_states("buyers", "c001", "c002") == {"c001": "converted", "c002": "completed"}
